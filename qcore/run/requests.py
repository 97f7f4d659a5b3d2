"""When two sessions ask for the same computation: a request's key, built from what decides its result.

A job's result is a function of the engine function and its arguments: the model (its weights and
preprocessing, `model_identity`), the data's name, sizes, seed and the quantization config (frozen
dataclasses, compared field by field). Two requests with equal keys may share one computation.
An argument the key cannot see into (a live object, a callback, a mutable dataclass) makes the
request private: `request_key` returns None rather than risk sharing a wrong result.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Hashable

from qcore.zoo.models import LoadedModel, model_identity

__all__ = ["request_key"]


class _Private(Exception):
    """An argument that cannot be compared by value."""


def _fingerprint(value) -> Hashable:
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, enum.Enum):
        return (type(value).__qualname__, value.value)
    if isinstance(value, LoadedModel):
        return ("model", model_identity(value))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, *(_fingerprint(v) for v in value))
    if isinstance(value, (dict, frozenset, set)):
        items = value.items() if isinstance(value, dict) else ((v, None) for v in value)
        return ("map", tuple(sorted(((repr(k), _fingerprint(v)) for k, v in items))))
    params = getattr(value, "__dataclass_params__", None)
    if dataclasses.is_dataclass(value) and params is not None and params.frozen:
        return (type(value).__qualname__, *((f.name, _fingerprint(getattr(value, f.name)))
                                            for f in dataclasses.fields(value)))
    raise _Private(type(value).__name__)


def request_key(name: str, fn: Callable, kwargs: dict) -> Hashable | None:
    """A hashable key for `fn(**kwargs)` under the job name `name`, or None when it must not be shared."""
    qualname = getattr(fn, "__qualname__", "<unknown>")
    if "<" in qualname:  # a lambda or a closure: its captured variables are part of the request, unseen
        return None
    try:
        return (name, f"{fn.__module__}.{qualname}", _fingerprint(kwargs))
    except (_Private, AttributeError):
        return None
