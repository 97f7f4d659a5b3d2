"""Latency measured, never estimated: every path interleaved in one process with the same threads.

Each round runs every path once (as a short burst, see BURST), in an order rotated from round to
round, so drift in the machine's speed (other processes, frequency changes) lands on all paths
alike. Warm-up runs come first. Reported: median, p10 and p90 over the timed calls, in ms.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from qcore.quant.progress import Msg, Progress

__all__ = ["Latency", "measure_interleaved"]

# Each round runs every path as a short burst: the first call of a burst is not timed. It absorbs
# what switching runtimes costs (the previous path's OpenMP threads still spinning, caches holding
# the other model's weights), so every path is timed in the steady state a deployed model serving
# back-to-back requests is in, while drift still lands on all paths alike.
BURST = 3


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int

    def to_dict(self) -> dict:
        return asdict(self)


def _quantile(sorted_values: list[float], q: float) -> float:
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


MIN_TIMED = 5  # a path over its time budget still gets this many timed calls: a median needs a few


def _warm(paths: dict, x: torch.Tensor, warmup: int, budget_s: float | None) -> dict[str, float]:
    """`warmup` untimed calls per path (fewer when one call takes more than a quarter of the path's budget;
    at least one when there is a budget); returns each path's last warm-up call in seconds, the estimate the
    budget works with."""
    last = dict.fromkeys(paths, 0.0)
    for name, fn in paths.items():
        for i in range(max(1 if budget_s is not None else 0, warmup)):
            start = time.perf_counter()
            fn(x)
            last[name] = time.perf_counter() - start
            if budget_s is not None and (i + 2) * last[name] > budget_s / 4:
                break
    return last


def _planned_calls(per_call: dict[str, float], iters: int, budget_s: float | None) -> dict[str, int]:
    """Timed calls per path: `iters`, or as many as fit in `budget_s` seconds (at least MIN_TIMED)."""
    if budget_s is None:
        return dict.fromkeys(per_call, iters)
    return {n: max(min(iters, MIN_TIMED), min(iters, int(budget_s / max(t, 1e-6)))) for n, t in per_call.items()}


def _summary(values: list[float]) -> Latency:
    values = sorted(values)
    return Latency(round(statistics.median(values), 4), round(_quantile(values, 0.1), 4),
                   round(_quantile(values, 0.9), 4), len(values))


@torch.no_grad()
def measure_interleaved(
    paths: dict[str, Callable[[torch.Tensor], object]],
    x: torch.Tensor,
    threads: int,
    warmup: int = 5,
    iters: int = 30,
    progress: Progress | None = None,
    burst: int = BURST,
    budget_s: float | None = None,
) -> dict[str, Latency]:
    """Time each callable `iters` times on the same input, interleaved in bursts, after `warmup` untimed calls
    each. With `budget_s`, a path whose calls are slow gets fewer calls (at least MIN_TIMED), so that its
    timing takes about `budget_s` seconds: a 1 s call is not timed 30 times."""
    if iters < 1:
        raise ValueError("iters must be at least 1")
    per_burst = max(1, burst - 1)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        planned = _planned_calls(_warm(paths, x, warmup, budget_s), iters, budget_s)
        samples: dict[str, list[float]] = {n: [] for n in paths}
        names, rounds = list(paths), math.ceil(max(planned.values()) / per_burst)
        began = time.perf_counter()
        for i in range(rounds):
            for name in names[i % len(names):] + names[: i % len(names)]:
                todo = min(per_burst, planned[name] - len(samples[name]))
                if todo <= 0:
                    continue  # this path has its calls; the others go on interleaved
                if burst > 1:
                    paths[name](x)  # untimed: switching from the previous path
                for _ in range(todo):
                    start = time.perf_counter()
                    paths[name](x)
                    samples[name].append((time.perf_counter() - start) * 1e3)
            if progress:
                left = (time.perf_counter() - began) / (i + 1) * (rounds - i - 1)
                progress((i + 1) / rounds, Msg("timing: round {i}/{n}, about {left:.0f} s left", i=i + 1, n=rounds,
                                                          left=left))
    finally:
        torch.set_num_threads(previous)
    return {name: _summary(values) for name, values in samples.items()}
