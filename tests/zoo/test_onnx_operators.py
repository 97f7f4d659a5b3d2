"""Operator versions current exporters write, on hand-made graphs, against onnxruntime; and operators that
cannot be converted are refused with their name, opset and node."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from qcore.zoo.onnx_import import OnnxUnsupported, load_onnx
from tests.zoo.onnx_helpers import ort_run


def save(tmp_path, nodes, inits, opset, out_rank=4, inputs=None, name="g.onnx"):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * out_rank)
    graph = helper.make_graph(nodes, "g", [x, *(inputs or [])], [y],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    path = tmp_path / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10), path)
    return path


def assert_matches_ort(path):
    x = torch.randn(1, 2, 5, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = load_onnx(path)(x).numpy()
    np.testing.assert_allclose(got, ort_run(path, x), rtol=1e-5, atol=1e-6)


PAD_CASES = [(mode, opset) for mode in ("constant", "reflect", "edge", "wrap") for opset in (18, 19, 21, 23)
             if mode != "wrap" or opset >= 19]  # 'wrap' exists from Pad 19


@pytest.mark.parametrize("mode,opset", PAD_CASES)
def test_pad_of_every_current_version_and_mode_matches_onnxruntime(mode, opset, tmp_path):
    full = save(tmp_path, [helper.make_node("Pad", ["x", "pads", "v"], ["y"], mode=mode)],
                {"pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "v": np.array(0.5, np.float32)}, opset)
    assert_matches_ort(full)
    axes = save(tmp_path, [helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], mode=mode)],
                {"pads": np.array([1, 2, 2, 1], np.int64), "axes": np.array([-2, 3], np.int64)}, opset,
                name="axes.onnx")  # ONNX's pads on chosen axes (Pad 18+), one negative, one positive
    assert_matches_ort(axes)


@pytest.mark.parametrize("op,opset,axes,keepdims", [("ReduceMean", 18, [2, 3], 1), ("ReduceMean", 18, [-1], 0),
                                                     ("ReduceMax", 20, [1], 1), ("ReduceL2", 18, [3], 0)])
def test_reduce_with_axes_as_an_input_matches_onnxruntime(op, opset, axes, keepdims, tmp_path):
    path = save(tmp_path, [helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)],
                {"axes": np.array(axes, np.int64)}, opset, out_rank=4 if keepdims else 4 - len(axes))
    assert_matches_ort(path)


def test_reshape_with_allowzero_as_the_dynamo_exporter_writes_it(tmp_path):
    path = save(tmp_path, [helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)],
                {"s": np.array([-1, 30], np.int64)}, 20, out_rank=2)
    assert_matches_ort(path)
    zero = save(tmp_path, [helper.make_node("Reshape", ["x", "s"], ["y"])], {"s": np.array([0, 0, -1], np.int64)},
                20, out_rank=3, name="zero.onnx")  # allowzero=0: a 0 copies the input's dimension
    assert_matches_ort(zero)


def test_an_operator_without_a_converter_is_named_with_opset_and_nodes(tmp_path):
    nodes = [helper.make_node("Det", ["x"], ["d"], name="det_a"), helper.make_node("Det", ["d"], ["y"], name="det_b")]
    path = save(tmp_path, nodes, {}, 17)
    with pytest.raises(OnnxUnsupported, match=r"cannot convert to torch: Det \(opset 17, nodes 'det_a', 'det_b'\)"):
        load_onnx(path)


def test_a_converter_that_refuses_names_operator_opset_and_node(tmp_path):
    """Pads that come from the data (a graph input) cannot become a static pad: refused, not run half-way."""
    pads = helper.make_tensor_value_info("pads", TensorProto.INT64, [8])
    path = save(tmp_path, [helper.make_node("Pad", ["x", "pads"], ["y"], name="pad_in")], {}, 21, inputs=[pads])
    with pytest.raises(OnnxUnsupported, match=r"Pad \(opset 21, node 'pad_in'\) could not be converted to torch: "
                                              r".*pads is computed at run time"):
        load_onnx(path)


def test_weights_in_a_missing_side_file_are_refused_with_the_export_option(tmp_path):
    w = numpy_helper.from_array(np.ones((30, 4), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 30])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    assert load_onnx(tmp_path / "m.onnx")(torch.ones(1, 30)).sum().item() == pytest.approx(120.0)
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(OnnxUnsupported, match=r"separate file \(m.onnx.data\).*external_data=False"):
        load_onnx(tmp_path / "m.onnx")


@pytest.mark.parametrize("axis", [2, -1])
def test_a_gather_with_indices_computed_at_run_time_matches_onnxruntime_and_traces(axis, tmp_path):
    """convnext from the dynamo exporter gathers rows by indices computed from the input's shape; onnx2torch's
    Gather checks their dtype in Python, which the simulation's fx trace cannot follow."""
    from qcore.quant.qconfig import QuantConfig
    from qcore.quant.build import calibrated_sim

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("ArgMax", ["c"], ["a"], axis=axis, keepdims=0),  # int64 indices known at run time
             helper.make_node("Add", ["a", "zero"], ["i"]),  # index arithmetic: an add the simulation leaves alone
             helper.make_node("Gather", ["c", "i"], ["y"], axis=axis)]
    w = np.random.default_rng(0).standard_normal((2, 2, 1, 1)).astype(np.float32)
    path = save(tmp_path, nodes, {"w": w, "zero": np.array(0, np.int64)}, 18, out_rank=6)
    assert_matches_ort(path)
    gm = load_onnx(path)
    assert not any(type(m).__name__ == "OnnxGather" for m in gm.modules())
    sim = calibrated_sim(gm, QuantConfig(), [torch.randn(2, 2, 5, 6)])  # traces, and quantizes no index
    assert [p.kind for p in sim.points] == ["input", "conv"]
