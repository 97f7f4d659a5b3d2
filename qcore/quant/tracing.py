"""torch.fx tracing that forward passes in other threads survive.

While it traces, fx's Tracer patches `torch.nn.Module.__call__` and `__getattr__` for the whole
process. A forward pass in another thread at that moment (another browser session evaluating its
model) is routed into the tracer and fails with "module is not installed as a submodule". Here
traces run one at a time under a lock, and the tracer hands calls from any other thread straight
to the real module, so they run exactly as if no trace were going on.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from torch import fx, nn

__all__ = ["exclusive_tracing", "symbolic_trace"]

_LOCK = threading.RLock()
_owner: int | None = None
_installed = False


def _install_guard() -> None:
    """Wrap fx.Tracer.call_module/getattr (once): calls from threads other than the tracing one pass through."""
    global _installed
    if _installed:
        return
    call_module, getattr_ = fx.Tracer.call_module, fx.Tracer.getattr

    def guarded_call_module(self, m, forward, args, kwargs):
        if _owner is not None and threading.get_ident() != _owner:
            return forward(*args, **kwargs)
        return call_module(self, m, forward, args, kwargs)

    def guarded_getattr(self, attr, attr_val, parameter_proxy_cache):
        if _owner is not None and threading.get_ident() != _owner:
            return attr_val
        return getattr_(self, attr, attr_val, parameter_proxy_cache)

    fx.Tracer.call_module = guarded_call_module
    fx.Tracer.getattr = guarded_getattr
    _installed = True


@contextmanager
def exclusive_tracing():
    """Hold this around any torch.fx trace (ours or torch.ao's prepare_fx)."""
    global _owner
    with _LOCK:
        _install_guard()
        previous, _owner = _owner, threading.get_ident()
        try:
            yield
        finally:
            _owner = previous


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    with exclusive_tracing():
        return fx.symbolic_trace(model)
