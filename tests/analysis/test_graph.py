"""The graph view's engine: the data-flow graph of fm_resnet's simulation (nodes, edges, order, residual adds,
every metric measured), block collapse on a 50-layer torchvision model, and the layout."""

import json
import math

import pytest
import torch

from qcore.analysis.graph_layout import auto_collapse, blocks, collapse, compare_values, layout, metric_value
from qcore.analysis.graph_metrics import loaded_model_graph, model_graph
from qcore.analysis.reports import LayerSensitivity
from qcore.quant.qconfig import QuantConfig


@pytest.fixture(scope="module")
def fm_graph():
    from qcore.zoo.models import load_model

    loaded = load_model("fm_resnet")
    config = QuantConfig().with_layer("layers.5.conv2", enabled=False)  # one layer kept in float
    rows = [LayerSensitivity("layers.0.conv1", "conv", 0.91, 0.9, 30.0, 0.01, 0.99)]
    return loaded_model_graph(loaded, config, calib_size=32, sensitivity=rows, sensitivity_from="test rows")


def test_fm_resnet_graph_nodes_edges_and_order(fm_graph):
    graph, sim = fm_graph
    kinds = [n.kind for n in graph.nodes]
    assert kinds[0] == "input" and kinds[1] == "quant" and kinds[-1] == "output"
    assert kinds.count("conv") == len(sim.weight_layers) - 1 and kinds.count("linear") == 1  # 6 blocks x 2 + 2 + stem
    assert kinds.count("quant") == len(sim.quantizers)  # every activation quantizer is a node
    assert kinds.count("add") == 6  # one residual add per block
    assert kinds.count("pool") == 1 and kinds.count("act") == 13
    assert [n.order for n in graph.nodes] == sorted(n.order for n in graph.nodes)
    ids = {n.id for n in graph.nodes}
    order = {n.id: n.order for n in graph.nodes}
    assert all(e.source in ids and e.target in ids and order[e.source] < order[e.target] for e in graph.edges)
    assert len(graph.edges) == len(graph.nodes) - 1 + 6  # a chain, plus the shortcut into each add
    add = graph.node("add")
    into_add = sorted(graph.node(e.source).label for e in graph.edges if e.target == "add")
    assert into_add == ["Q(layers.0.conv2)", "Q(stem.0)"]  # the residual: the block's output and its input
    assert add.module == "layers.0"


def test_fm_resnet_graph_metrics_are_measured(fm_graph):
    graph, sim = fm_graph
    for n in graph.nodes[1:]:
        m = n.metrics
        assert math.isfinite(m.sqnr_db) and 5 < m.sqnr_db < 80, n
        assert m.float_min <= m.float_max and m.quant_min <= m.quant_max
    quant = [n for n in graph.nodes if n.kind == "quant"]
    assert [n.label for n in quant if n.metrics.quantized == 0.0] == ["Q(layers.5.conv2)"]  # the float layer's output
    assert graph.node("quantizers_q20").metrics.clip_error is None
    for n in (n for n in quant if n.metrics.quantized):
        q = sim.quantizer(n.layer)
        assert n.metrics.clip_error == q.range.clip_error and n.metrics.rounding_error == q.range.rounding_error
        assert n.metrics.rounding_error > 0 and n.metrics.bits == 8 and n.metrics.quantized == 1.0
    floated = graph.node("layers_5_conv2")
    assert floated.metrics.bits == 32 and floated.metrics.precision == "fp32" and floated.metrics.quantized == 0.0
    assert graph.node("layers_0_conv1").metrics.sensitivity == 0.91 and graph.sensitivity_from == "test rows"
    assert graph.node("layers_1_conv1").metrics.sensitivity is None
    # the model's output against the float model's on the probe images: what the evaluation code computes
    from qcore.analysis.evaluate import sqnr_db
    from qcore.analysis.graph_metrics import calibration_batches
    from qcore.zoo.models import load_model

    probe = calibration_batches(load_model("fm_resnet"), None, 32).head(graph.probe_images)
    with torch.no_grad(), sim.disabled():
        ref = sim(probe)
    with torch.no_grad():
        out = sim(probe)
    assert graph.nodes[-1].metrics.sqnr_db == pytest.approx(sqnr_db(ref, out), abs=1e-6)
    text = json.loads(graph.to_json())
    assert text["nodes"][0]["metrics"]["sqnr_db"] is None and len(text["edges"]) == len(graph.edges)


def test_sqnr_falls_when_activations_get_fewer_bits(fm_graph):
    """A 4-bit activation grid is measured as worse at the output than the 8-bit one (the numbers follow the config)."""
    from qcore.zoo.models import load_model

    low, _ = loaded_model_graph(load_model("fm_resnet"), QuantConfig().with_default(act_bits=4), calib_size=16)
    assert low.nodes[-1].metrics.sqnr_db < fm_graph[0].nodes[-1].metrics.sqnr_db - 10


def test_collapse_layout_and_compare_on_fm_resnet(fm_graph):
    graph, _ = fm_graph
    view = collapse(graph, 2)
    assert blocks(view) == ["stem.2", "layers.0", "layers.1", "layers.2", "layers.3", "layers.4", "layers.5", "fc"]
    block = view.node("block:layers.2")
    assert len(block.members) == 10  # 3 convs (one the shortcut), their 3 quantizers, act1, the add, act2, Q(add)
    assert block.metrics.sqnr_db == graph.node("quantizers_q11").metrics.sqnr_db  # the block's output: Q(add_2)
    opened = collapse(graph, 2, expand=("layers.2",))
    assert len(opened.nodes) == len(view.nodes) + 9
    places = layout(graph)
    assert places.y["x"] == 0 and places.y["output"] == -(places.rows - 1)
    assert places.y["layers_2_shortcut_0"] == places.y["layers_2_conv1"]  # the two branches side by side
    assert places.x["layers_2_shortcut_0"] != places.x["layers_2_conv1"]
    assert metric_value(graph.node("add"), "range") > 0
    assert compare_values(graph.node("layers_5_conv2"), "bits") == (32.0, 32.0)


@pytest.mark.slow
def test_mobilenet_v2_collapses_to_its_blocks():
    """torchvision mobilenet_v2 with random weights (64x64 inputs: the graph does not depend on the size)."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2().eval()
    graph, _ = model_graph(net, [torch.randn(4, 3, 64, 64)], probe_images=2)
    assert len(graph.nodes) > 150 and sum(n.kind == "add" for n in graph.nodes) == 10
    view, depth = auto_collapse(graph)
    assert depth == 2 and len(view.nodes) <= 60
    assert blocks(view)[:3] == ["features.0", "features.1", "features.2"] and "features.18" in blocks(view)
    assert all(math.isfinite(n.metrics.sqnr_db) for n in view.nodes[1:])
    assert layout(view).rows == len(view.nodes)  # collapsed, the network is one column top to bottom
