"""The executor seam: sweeps submit independent, deterministic work items through one interface.

A sweep (sensitivity both sides, the method x bits grid, per-layer rounding) is a function
`fn(shared, item) -> result` over a list of items, with `shared` the state every item reads (the
calibrated sim, its ranges, the evaluation batches). `LocalExecutor` runs them in this process, in
order, as the engine always did; `qcore.run.executors.RayExecutor` runs the same items as Ray
tasks with `shared` put into Ray's object store once. Items are deterministic, so both give the same
numbers. The engine takes an executor as an argument (None: local) and never imports Ray.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from qcore.quant.progress import Msg, Progress, silent

__all__ = ["Executor", "LocalExecutor", "ExecutorInfo"]


class ExecutorInfo(dict):
    """What ran a job, for its report: {"engine": "local"|"ray", "workers": N, "address": ...}."""


class Executor(Protocol):
    def map(self, fn: Callable[[Any, Any], Any], shared: Any, items: Sequence, progress: Progress | None = None,
            what: str = "items") -> list: ...

    def info(self) -> ExecutorInfo: ...


class LocalExecutor:
    """In-process, in order: the default, and the reference the distributed executors must equal."""

    def map(self, fn, shared, items, progress=None, what: str = "items") -> list:
        say = progress or silent
        out = []
        for i, item in enumerate(items):
            out.append(fn(shared, item))
            say((i + 1) / len(items), Msg("{i}/{n} {what}", i=i + 1, n=len(items), what=what))
        return out

    def info(self) -> ExecutorInfo:
        return ExecutorInfo(engine="local", workers=1)
