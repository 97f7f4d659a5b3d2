"""Per-layer numbers for the Calibration and Learn pages."""

import pytest
import torch

from qcore.analysis.layers import channel_spread, folded_weight, has_unbounded_activations, method_ranges
from qcore.quant.quantsim import QuantSim
from qcore.quant.stats import TensorStats
from tests.helpers import randomized, tiny_fashion_model


def relu_stats() -> TensorStats:
    stats = TensorStats("act")
    stats.update(torch.relu(torch.randn(20_000, generator=torch.Generator().manual_seed(0))))
    return stats


def test_max_covers_the_observed_range_and_percentile_clips_inside_it():
    stats = relu_stats()
    r = method_ranges(stats, ["max", "percentile:99"], 8, symmetric=False)
    assert r["max"].clip_max == pytest.approx(stats.max, rel=1e-3)
    assert r["percentile:99"].clip_max < r["max"].clip_max
    assert r["max"].zero_point == 0  # asymmetric uint8 grid starting at the ReLU's 0


def test_symmetric_ranges_are_signed_and_centred():
    r = method_ranges(relu_stats(), ["max"], 8, symmetric=True)["max"]
    assert r.zero_point == 0 and r.clip_min == pytest.approx(-r.clip_max, rel=1e-2)


def test_fewer_bits_mean_more_rounding_error():
    stats = relu_stats()
    four, eight = (method_ranges(stats, ["max"], bits, False)["max"] for bits in (4, 8))
    assert four.rounding_error > eight.rounding_error


def test_channel_spread_is_the_widest_over_the_median_channel():
    assert channel_spread([-1.0, -2.0, -0.5], [1.0, 2.0, 10.0]) == pytest.approx(10.0 / 2.0)
    assert channel_spread([0.0], [0.0]) == 0.0  # an all-zero layer does not divide by zero


def test_folded_weight_has_the_batch_norm_in_it():
    loaded = tiny_fashion_model()
    randomized(loaded.module)
    sim = QuantSim(loaded.module)
    w = folded_weight(sim, "0")
    assert w.shape == loaded.module[0].weight.shape and not w.requires_grad
    assert not torch.allclose(w, loaded.module[0].weight)


def test_unbounded_activations_are_found_by_type():
    assert has_unbounded_activations([{"type": "Conv2d"}, {"type": "GELU"}])
    assert not has_unbounded_activations([{"type": "Conv2d"}, {"type": "ReLU"}])
