"""The base of every typed report: results cross package boundaries as these, not as loose dicts.

A report is plain data (numbers, strings, lists, dicts and nested report dataclasses); live objects
(models, QuantSims) never go inside. `to_dict()` is the JSON the README documents; `metrics()` is
the flat row of scalar results the history stores and compares runs by.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

__all__ = ["Report", "RunIdentity", "scalar"]

IDENTITY = ("seed", "threads", "calib_size", "eval_size", "eval_images", "monitor_images", "iters")


@dataclass(frozen=True)
class RunIdentity:
    """Which model (name and weights digest) ran on which data, with which seed and calibration size, on
    which CPU (INT8 results depend on its instruction sets), and how accuracies are scored. Built by
    `Inputs.run_identity()`; every run report holds one as `identity`, so two runs compare by it."""

    model: str
    model_id: str  # the first 16 hex digits of the weights' sha256
    data: str | None
    seed: int
    calib_size: int
    isa: dict  # the CPU's instruction sets as CPUID reports them (quant.isa.Isa.to_dict())
    # "labels": accuracies are against the data's labels; "fp32": the images have no labels the model
    # knows, and every "accuracy" is top-1 agreement with the FP32 model (FP32 itself scores 1.0)
    scored_by: str

    def to_dict(self) -> dict:
        return asdict(self)


def scalar(v) -> bool:
    """A number the history can store as a metric (booleans are not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class Report:
    """Fields common to all: which model (name and weights digest) on which data with which seed."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        """Strict JSON: NaN and infinities (an undefined cosine, an SQNR of a perfect match) become null."""
        return json.dumps(_finite(self.to_dict()), indent=2, allow_nan=False) + "\n"

    def metrics(self) -> dict[str, float]:
        """Top-level scalar results (timings and identity numbers are not results)."""
        return {k: float(v) for k, v in self._top_level().items()
                if scalar(v) and not k.endswith("seconds") and k not in IDENTITY}

    def timings(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._top_level().items() if scalar(v) and k.endswith("seconds")}

    def _top_level(self) -> dict:
        """The fields as they are, not deep-copied: `to_dict()` copies every nested list (a calibration study's
        weights), which took seconds of a finished job when metrics and timings each called it."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _finite(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o
