"""Dynamic INT8: only Linear layers change; the Learn page's dynamic-vs-static run on a tiny model."""

import pytest
import torch
from torch import nn

from qcore.runtime.dynamic_study import dynamic_runner, dynamic_vs_static, quantize_linear_dynamic
from tests.helpers import tiny_fashion_model


def test_dynamic_quantization_changes_linear_layers_only():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 16), nn.ReLU(),
                          nn.Linear(16, 10)).eval()
    qmodel, changed = quantize_linear_dynamic(model)
    assert changed == ["3", "5"]
    assert type(qmodel[0]) is nn.Conv2d and type(qmodel[3]) is not nn.Linear
    assert type(model[3]) is nn.Linear  # the original is untouched
    x = torch.randn(2, 1, 28, 28)
    runner, names = dynamic_runner(model)
    assert names == changed and runner.kind == "dynamic"
    with torch.no_grad():
        assert torch.allclose(runner(x), model(x), atol=0.05 * float(model(x).abs().max()))


@pytest.mark.slow
def test_dynamic_vs_static_on_a_tiny_model():
    r = dynamic_vs_static(tiny_fashion_model(), calib_size=32, eval_size=64, iters=3)
    assert set(r.accuracy) == set(r.latency_ms) == {"fp32", "dynamic_int8", "static_int8"}
    assert r.dynamic_layers == ["5"] and r.conv_layers == 1 and 0 < r.linear_mac_share < 0.5
    # dynamic INT8 changes the one Linear only (int8 weights, per-batch activation scale): its predictions are
    # FP32's but for a near-tie or two of the 64 images. (Latency is a benchmark's to judge, not a unit test's:
    # three timed calls on a shared machine say nothing reliable.)
    assert abs(r.accuracy["dynamic_int8"] - r.accuracy["fp32"]) <= 2 / 64
    assert r.to_dict()["static_backend"] in ("x86", "ort_u8s8")
