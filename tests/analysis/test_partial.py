"""Partial / mixed-precision configs from per-layer precision choices, and the page's sweep,
measurement and greedy search as plain functions."""

from pathlib import Path

import pytest

from qcore.analysis.partial import PRECISIONS, config_from_precisions, greedy_search, measure_config, sweep_layers
from qcore.analysis.sensitivity import evaluate_config, float_layers, weight_bytes
from qcore.quant.qconfig import QuantConfig
from tests.helpers import tiny_fashion_model

BASE = QuantConfig().with_default(weight_bits=6, act_bits=7, act_symmetric=True)


def test_float_disables_only_that_layer():
    cfg = config_from_precisions(BASE, {"c1": "float", "c2": "int8"}, {"c1": "conv", "c2": "conv"})
    assert cfg.for_layer("c1").enabled is False
    assert cfg.for_layer("c2") == BASE.default
    assert [name for name, _ in cfg.layers] == ["c1"]


def test_int4_weights_on_conv_and_linear_keeps_the_rest_of_the_base():
    cfg = config_from_precisions(BASE, {"c": "int4 weights", "fc": "int4 weights"}, {"c": "conv", "fc": "linear"})
    for name in ("c", "fc"):
        layer = cfg.for_layer(name)
        assert layer.weight_bits == 4 and layer.act_bits == 7 and layer.act_symmetric and layer.enabled


def test_int4_weights_is_ignored_for_layers_without_weights():
    cfg = config_from_precisions(BASE, {"sum": "int4 weights", "act": "int4 weights"}, {"sum": "add", "act": "act"})
    assert cfg == BASE


def test_a16_sets_activation_bits_only():
    layer = config_from_precisions(BASE, {"sum": "A16 activations"}, {"sum": "add"}).for_layer("sum")
    assert layer.act_bits == 16 and layer.weight_bits == 6 and layer.enabled


def test_all_int8_is_the_base_config():
    assert config_from_precisions(BASE, {"a": "int8", "b": "int8"}, {"a": "conv", "b": "add"}) == BASE


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="int3"):
        config_from_precisions(BASE, {"a": "int3"}, {"a": "conv"})


def test_precisions_are_what_the_page_offers():
    assert PRECISIONS == ("int8", "int4 weights", "A16 activations", "float")


@pytest.fixture
def swept(tiny_fashion_mnist):
    calls = []
    result = sweep_layers(tiny_fashion_model(), QuantConfig(), calib_size=32, eval_size=20,
                          progress=lambda *args: calls.append(args))
    return result, calls


def fake_probe(prepared, out_dir):
    """A latency probe without ONNX Runtime: 1 ms plus 0.5 ms per float layer, FP32 always 2 ms."""
    assert Path(out_dir).is_dir()

    def measure(config):
        measure.fp32_ms.append(2.0)
        return 1.0 + 0.5 * sum(not c.enabled for _, c in config.layers)

    measure.fp32_ms = []
    return measure


def test_sweep_layers_reports_every_layer_and_keeps_the_prepared_state(swept):
    result, calls = swept
    p, report = result.prepared, result.report
    assert calls[0] == (0.0, "calibrating (one statistics pass)")
    assert [r.name for r in report.layers] == p.sim.layer_names()
    assert report.eval_size == 20 and p.fp32_accuracy == report.fp32_accuracy


def test_every_layer_float_gives_the_fp32_accuracy(swept):
    p, rows = swept[0].prepared, swept[0].report.layers
    cfg = config_from_precisions(p.base_config, {r.name: "float" for r in rows}, {r.name: r.kind for r in rows})
    assert evaluate_config(p, cfg) == {"accuracy": p.fp32_accuracy, "agreement": 1.0}


def test_measure_config_reports_latency_size_and_float_layers(swept):
    p = swept[0].prepared
    calls = []
    cfg = config_from_precisions(p.base_config, {"0": "float"}, {"0": "conv"})
    m = measure_config(p, cfg, fake_probe, progress=lambda *args: calls.append(args))
    assert [c[0] for c in calls] == [0.1, 0.5]
    assert m.float_layers == ["0"] and m.latency_ms == 1.5 and m.fp32_ms == 2.0
    assert m.accuracy == evaluate_config(p, cfg)["accuracy"] and m.config == cfg.to_dict()
    assert m.weight_bytes > weight_bytes(p, p.base_config)  # a float conv stores 4 bytes per weight


def test_greedy_search_fills_latency_and_weight_size_of_every_point(swept):
    result = swept[0]
    p = result.prepared
    g = greedy_search(p, result.report, budget=-1.0, max_float=2, latency_probe=fake_probe)  # unmeetable
    assert [len(pt.float_layers) for pt in g.curve] == [0, 1, 2] and not g.met
    assert [pt.latency_ms for pt in g.curve] == [1.0, 1.5, 2.0]
    assert all(pt.fp32_ms == 2.0 for pt in g.curve)
    for pt in g.curve:
        assert pt.weight_bytes == weight_bytes(p, float_layers(p.base_config, pt.float_layers))
    assert g.curve[0].weight_bytes < g.curve[-1].weight_bytes  # 2 of 3 layers float: one has weights
