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

from qcore.quant.progress import Progress

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


@torch.no_grad()
def measure_interleaved(
    paths: dict[str, Callable[[torch.Tensor], object]],
    x: torch.Tensor,
    threads: int,
    warmup: int = 5,
    iters: int = 30,
    progress: Progress | None = None,
    burst: int = BURST,
) -> dict[str, Latency]:
    """Time each callable `iters` times on the same input, interleaved in bursts, after `warmup`
    untimed calls each."""
    if iters < 1:
        raise ValueError("iters must be at least 1")
    per_burst = max(1, burst - 1)
    rounds = math.ceil(iters / per_burst)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        names = list(paths)
        for name in names:
            for _ in range(warmup):
                paths[name](x)
        samples: dict[str, list[float]] = {n: [] for n in names}
        for i in range(rounds):
            for name in names[i % len(names):] + names[: i % len(names)]:
                if burst > 1:
                    paths[name](x)  # untimed: switching from the previous path
                for _ in range(min(per_burst, iters - i * per_burst)):
                    start = time.perf_counter()
                    paths[name](x)
                    samples[name].append((time.perf_counter() - start) * 1e3)
            if progress:
                progress((i + 1) / rounds, f"timing: round {i + 1}/{rounds}")
    finally:
        torch.set_num_threads(previous)
    result = {}
    for name, values in samples.items():
        values.sort()
        result[name] = Latency(
            round(statistics.median(values), 4), round(_quantile(values, 0.1), 4), round(_quantile(values, 0.9), 4), len(values)
        )
    return result
