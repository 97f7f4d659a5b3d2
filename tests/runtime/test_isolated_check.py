"""Each quantized op of the real INT8 model, fed the simulation's integers, computes what the simulation
computes: at most one step off, or it is named. Constructs of ImageNet-class graphs, dead channels, and
the CPU's own int16 behaviour."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from qcore.quant import bias_range
from qcore.quant.isa import cpu_isa
from qcore.quant.qconfig import QuantConfig
from qcore.quant.build import calibrated_sim
from qcore.runtime.backends import ort as ort_backend
from qcore.runtime.isolated_check import check_ops, departing, isolated_summary
from qcore.zoo.builtin_nets import FMResNet
from tests.helpers import randomized, with_dead_channels
from tests.runtime.fidelity_nets import CONSTRUCTS


def _checked(model, tmp_path, shape=(3, 16, 16), config=None, sim=None):
    """(sim, isolated checks) of `model` calibrated on 2 images in [-1, 1], checked on a third."""
    torch.manual_seed(0)
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    sim = sim or calibrated_sim(model, config or QuantConfig(), [x[:2]])
    runner = ort_backend.int8_runner(sim, shape, tmp_path, 1, "u8")
    return sim, check_ops(sim, runner.path, x[2:])


@pytest.mark.parametrize("construct", sorted(CONSTRUCTS))
def test_every_construct_computes_what_the_simulation_computes(tmp_path, construct):
    """Padding, depthwise, SE (sigmoid x mul), hard-swish, SiLU, residual add, concat, average pooling:
    each op quantized in both, or float in both (a float op sits between a Dequantize and the next
    Quantize in the INT8 model, as between two quantizers in the simulation)."""
    model = with_dead_channels(randomized(CONSTRUCTS[construct]()), 0.25)
    sim, checks = _checked(model, tmp_path)
    assert [c.name for c in checks] == [q.name for q in sim.int_quantizers()]
    assert not departing(checks), [c.to_dict() for c in departing(checks)]


def test_tf_same_padding_runs_inside_the_int8_conv(tmp_path):
    """F.pad before a conv (TF 'same', asymmetric) fuses into QLinearConv, padding with the zero-point."""
    _, checks = _checked(randomized(CONSTRUCTS["padding"]()), tmp_path)
    convs = [c for c in checks if c.name.endswith(".0")]
    assert len(convs) == 3 and all(c.kernels == ["QLinearConv"] for c in convs), [c.to_dict() for c in convs]


def _dead_stem(beta: float) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1))
    with torch.no_grad():
        model[1].weight[0], model[1].bias[0] = 0.0, beta  # gamma 0: a dead channel with a real bias
    return model.eval()


def test_a_dead_channel_keeps_its_bias(tmp_path):
    """Its weight scale is raised until the int32 bias fits, in the simulation and the INT8 model alike."""
    sim, checks = _checked(_dead_stem(30.0), tmp_path, shape=(3, 8, 8))
    assert sim.bias_floors == {"0": 1}
    assert not departing(checks), [c.to_dict() for c in checks]


def test_without_the_floor_the_int32_bias_wraps_and_the_check_names_the_layer(tmp_path, monkeypatch):
    """The failure the floor prevents: ONNX Runtime's int32 bias of the dead channel overflows and the
    whole channel is wrong, by up to the full 255 steps; the ops after it are fed the simulation's
    integers, so they do not inherit the error."""
    monkeypatch.setattr(bias_range, "INT32_BIAS_LIMIT", 2 ** 40)
    _, checks = _checked(_dead_stem(30.0), tmp_path, shape=(3, 8, 8))
    assert [c.name for c in departing(checks)] == ["0"]
    bad = departing(checks)[0]
    assert bad.max_steps > 100 and bad.off_fraction == pytest.approx(1 / 8, abs=0.01)


def test_a_scrambled_layer_departs_alone(tmp_path):
    """Unlike the end-to-end layer check, the layers after the broken one agree: each is fed the
    simulation's integers."""
    model = randomized(FMResNet((8, 16, 32), (1, 1, 1)))
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    sim = calibrated_sim(model, QuantConfig(), [x[:2]])
    broken = copy.deepcopy(sim)
    with torch.no_grad():
        w = broken.weight_layers["layers.1.conv1"].layer.weight
        w.copy_(w.flatten()[torch.randperm(w.numel(), generator=torch.Generator().manual_seed(1))].reshape(w.shape))
    broken.weights_changed()
    runner = ort_backend.int8_runner(broken, (1, 28, 28), tmp_path, 1, "u8")
    checks = check_ops(sim, runner.path, x[2:])
    assert [c.name for c in departing(checks)] == ["layers.1.conv1"]
    summary = isolated_summary(checks)
    assert summary["worst"] == "layers.1.conv1" and summary["int8_ops"] == len(checks) - 1
    assert [c.name for c in checks if not c.int8] == ["fc"]  # after global pooling: a float Gemm in both


def test_eight_bit_weights_depart_exactly_where_the_cpu_has_no_vnni(tmp_path):
    """u8 x s8 pairs saturate in int16 without VNNI: 8-bit weights make some conv depart there; with
    VNNI (int32 accumulation) every op is exact. 7-bit weights ("auto" without VNNI) are exact on both."""
    model = randomized(FMResNet((8, 16, 32), (1, 1, 1)))
    _, full = _checked(model, tmp_path / "full", shape=(1, 28, 28), config=QuantConfig(weight_range="full"))
    _, auto = _checked(model, tmp_path / "auto", shape=(1, 28, 28))
    assert not departing(auto)
    if cpu_isa().vnni:
        assert not departing(full), [c.to_dict() for c in departing(full)]
    else:
        assert departing(full) and all(c.kernels == ["QLinearConv"] for c in departing(full))


def test_the_diagnosis_names_the_departing_op_and_why(tmp_path, monkeypatch):
    """Deploy's diagnosis reads the isolated check: the op, its kernel, how far off, and the likely cause."""
    from qcore.runtime.diagnose import isolated_findings

    monkeypatch.setattr(bias_range, "INT32_BIAS_LIMIT", 2 ** 40)
    _, checks = _checked(_dead_stem(30.0), tmp_path, shape=(3, 8, 8))
    found = isolated_findings(isolated_summary(checks), {"vnni": True}, "full")
    assert len(found) == 1 and found[0].startswith("0 (QLinearConv) departs on its own") and "int32 bias" in found[0]
    monkeypatch.setattr(bias_range, "INT32_BIAS_LIMIT", 2 ** 30)
    _, exact = _checked(_dead_stem(30.0), tmp_path / "fixed", shape=(3, 8, 8))
    assert "within one step" in isolated_findings(isolated_summary(exact), {"vnni": True}, "full")[0]
