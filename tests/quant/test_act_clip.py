"""LayerConfig.act_clip: a fixed clip range per layer, honored by calibration, kept through JSON, and exported."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from qcore.quant.qconfig import LayerConfig, QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.runtime.backends.onnx_export import export_qdq
from qcore.zoo.builtin_nets import FMResNet
from tests.helpers import randomized

SHAPE = (1, 28, 28)
LAYER = "layers.1.conv1"


def _calibrated(config):
    torch.manual_seed(0)
    sim = QuantSim(randomized(FMResNet((8, 16, 32), (1, 1, 1))), config)
    sim.collect_stats([torch.randn(32, *SHAPE, generator=torch.Generator().manual_seed(0))])
    sim.apply_ranges()
    return sim


def test_calibration_uses_the_typed_range_for_that_layer_only():
    plain = _calibrated(QuantConfig())
    sim = _calibrated(QuantConfig().with_layer(LAYER, act_clip=(-0.5, 1.5)))
    q = sim.quantizer(LAYER)
    assert (q.range.clip_min, q.range.clip_max, q.range.method) == (-0.5, 1.5, "fixed")
    assert float(q.scale) == pytest.approx(2.0 / 255) and plain.quantizer(LAYER).range.clip_max != 1.5
    for other in sim.layer_names():
        if other != LAYER:
            assert sim.quantizer(other).range == plain.quantizer(other).range
    # a method for all layers, or precomputed ranges, do not override a fixed range
    assert sim.apply_ranges(method="mse")[LAYER].clip_max == 1.5
    assert sim.apply_ranges(ranges=plain.apply_ranges())[LAYER].clip_max == 1.5
    assert q.range.clip_error >= 0 and q.range.rounding_error > 0  # estimated from the same histogram


def test_a_symmetric_grid_makes_the_fixed_range_symmetric():
    sim = _calibrated(QuantConfig().with_layer(LAYER, act_clip=(-0.5, 1.5), act_symmetric=True))
    assert (sim.quantizer(LAYER).range.clip_min, sim.quantizer(LAYER).range.clip_max) == (-1.5, 1.5)


def test_act_clip_round_trips_through_json_and_is_checked():
    config = QuantConfig().with_layer("a", act_clip=(0.0, 3.25)).with_default(act_bits=6)
    back = QuantConfig.from_json(config.to_json())
    assert back == config and back.for_layer("a").act_clip == (0.0, 3.25)
    assert hash(back.for_layer("a")) == hash(config.for_layer("a"))  # a tuple again, not JSON's list
    assert QuantConfig.from_dict({"layers": {"a": {"act_clip": [1, 2]}}}).for_layer("a").act_clip == (1.0, 2.0)
    with pytest.raises(ValueError, match="act_clip"):
        LayerConfig(act_clip=(2.0, 1.0))


def _qdq_scales(path) -> list[float]:
    """Every scalar float the QDQ file holds (QuantizeLinear scales are such constants)."""
    model = onnx.load(str(path))
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    values = [numpy_helper.to_array(t) for t in tensors]
    return [float(v) for v in values if v.size == 1 and np.issubdtype(v.dtype, np.floating)]


def test_the_exported_int8_graph_takes_the_fixed_range(tmp_path):
    """The QDQ ONNX file (what ORT's INT8 model runs) quantizes the layer's output with the typed range's scale."""
    scale = 3.0 / 255
    sim = _calibrated(QuantConfig(weight_range="full").with_layer(LAYER, act_clip=(0.0, 3.0)))
    plain = _calibrated(QuantConfig(weight_range="full"))
    edited = _qdq_scales(export_qdq(sim, SHAPE, tmp_path / "edited.onnx"))
    before = _qdq_scales(export_qdq(plain, SHAPE, tmp_path / "plain.onnx"))
    assert any(v == pytest.approx(scale, rel=1e-6) for v in edited)
    assert not any(v == pytest.approx(scale, rel=1e-6) for v in before)


def test_the_x86_int8_model_takes_the_fixed_range(monkeypatch):
    """torch's x86 INT8 model is built from the sim's ranges too: the layer's requantization scale is the typed one."""
    from qcore.runtime.backends import x86

    seen = []
    facts = x86._graph_facts
    monkeypatch.setattr(x86, "_graph_facts", lambda quantized: seen.append(quantized) or facts(quantized))
    sim = _calibrated(QuantConfig(weight_range="full").with_layer(LAYER, act_clip=(0.0, 3.0)))
    x86.x86_runner(sim, SHAPE, threads=1)
    scale = float(seen[0].get_submodule(LAYER).scale)
    assert scale == pytest.approx(3.0 / 255, rel=1e-6)
