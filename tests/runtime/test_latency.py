"""Interleaved timing: every path gets exactly `iters` timed calls, in rotated bursts."""

import pytest
import torch

from qcore.runtime.latency import measure_interleaved


def test_bursts_rotate_and_count_exactly():
    calls = []
    paths = {name: (lambda x, name=name: calls.append(name)) for name in ("a", "b", "c")}
    result = measure_interleaved(paths, torch.zeros(1), threads=1, warmup=1, iters=5, burst=3)
    assert {n: r.runs for n, r in result.items()} == {"a": 5, "b": 5, "c": 5}
    timed = calls[3:]  # after one warm-up call each
    # rounds of (1 untimed + 2 timed) per path, order rotated each round; the last round is short
    assert timed[:9] == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert timed[9:18] == ["b"] * 3 + ["c"] * 3 + ["a"] * 3
    assert timed[18:] == ["c"] * 2 + ["a"] * 2 + ["b"] * 2
    for r in result.values():
        assert 0 <= r.p10_ms <= r.median_ms <= r.p90_ms


def test_burst_of_one_times_every_call():
    calls = []
    result = measure_interleaved({"a": lambda x: calls.append(1)}, torch.zeros(1), threads=1, warmup=0, iters=4, burst=1)
    assert result["a"].runs == 4 and len(calls) == 4


def test_iters_must_be_positive():
    with pytest.raises(ValueError):
        measure_interleaved({"a": lambda x: None}, torch.zeros(1), threads=1, iters=0)
