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


def test_a_slow_path_gets_fewer_calls_within_its_budget_and_the_fast_one_all():
    """Budget 0.1 s: a 30 ms path fits 3 calls, raised to MIN_TIMED; a 0 ms path gets all 20."""
    import time

    from qcore.runtime.latency import MIN_TIMED

    slow, fast = [], []
    result = measure_interleaved({"slow": lambda x: (slow.append(1), time.sleep(0.03)), "fast": lambda x: fast.append(1)},
                                 torch.zeros(1), threads=1, warmup=5, iters=20, burst=3, budget_s=0.1)
    assert result["slow"].runs == MIN_TIMED and result["fast"].runs == 20
    assert len(slow) < 5 + MIN_TIMED * 2  # warm-up cut short too (each 30 ms call is over a quarter of 0.1 s)
    assert result["slow"].median_ms >= 30
