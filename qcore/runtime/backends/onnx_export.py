"""Export to ONNX: the FP32 model, and the QuantSim as a QDQ model carrying its exact ranges.

torch's fake-quant ops export as QuantizeLinear/DequantizeLinear pairs; ONNX Runtime then fuses
DQ -> Conv -> Q into QLinearConv (and likewise Add, MatMul, pooling), so the INT8 model runs the
very grids the simulation used. The legacy TorchScript-based exporter (dynamo=False) is used: it
handles the fake-quant ops and writes one self-contained file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

__all__ = ["export_onnx", "export_qdq", "store_int8_weights", "explicit_pad_values"]

OPSET = 17


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path, fold_constants: bool = True) -> Path:
    """Write `model` to `path` with a dynamic batch dimension ("x" -> "logits")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, *input_shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            model, (example,), str(path), opset_version=OPSET, dynamo=False, do_constant_folding=fold_constants,
            input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def export_qdq(sim, input_shape: tuple[int, ...], path: Path, activations: str = "u8") -> Path:
    """Write the calibrated QuantSim as a QDQ ONNX model (uint8 or int8 activations, int8 weights).

    The exporter's constant folding would turn weight Q -> DQ back into a float weight, so it is
    off; `store_int8_weights` then folds each weight QuantizeLinear into an int8 initializer.
    """
    with sim.torch_fake_quant(activations):
        export_onnx(sim, input_shape, path, fold_constants=False)
    store_int8_weights(path)
    explicit_pad_values(path)
    return path


def explicit_pad_values(path: Path) -> int:
    """Give every constant-mode Pad of dequantized integers without a pad value an explicit 0 (the value it has anyway).

    torch writes `F.pad(x, pads)` (TF 'same' padding before a conv) as a Pad with no value input,
    and ONNX Runtime fuses only a Pad whose value it can read into the QLinearConv after it: without
    one, DQ -> Pad -> Conv ran as a float conv. With the explicit 0 the pad becomes the QLinearConv's
    own padding, which pads the integers with the zero-point: exactly the simulation's 0.0, since
    every activation grid holds 0 exactly. Returns how many Pads it changed."""
    model = onnx.load(str(path))
    graph = model.graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}  # float by construction
    pads = [n for n in graph.node if n.op_type == "Pad" and n.input[0] in dequantized
            and (len(n.input) < 3 or not n.input[2])
            and next((a.s for a in n.attribute if a.name == "mode"), b"constant") == b"constant"]
    if not pads:
        return 0
    graph.initializer.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "qx_pad_zero"))
    for node in pads:
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = "qx_pad_zero"
    onnx.save(model, str(path))
    return len(pads)


def store_int8_weights(path: Path) -> None:
    """Replace QuantizeLinear(constant float weight) by the int8 tensor it produces.

    The weights are already on their grid, so round(w / scale) + zero_point is exact; the file
    then holds int8 weights (a quarter of the float size) feeding DequantizeLinear, the form
    ONNX Runtime fuses into QLinearConv / QLinearMatMul.
    """
    model = onnx.load(str(path))
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:  # constants, and casts of constants (how the exporter writes scales)
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in consts:  # the exporter's de-duplicated tensors
            consts[node.output[0]] = consts[node.input[0]]
        elif node.op_type == "Cast" and node.input[0] in consts:
            to = next(a.i for a in node.attribute if a.name == "to")
            consts[node.output[0]] = consts[node.input[0]].astype(onnx.helper.tensor_dtype_to_np_dtype(to))
    replaced = {}
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in consts or consts[node.input[0]].ndim < 2:
            continue
        w, scale, zp = (consts[n] for n in node.input[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)) + zp.reshape(shape).astype(np.int32), -128, 127).astype(zp.dtype)
        name = node.output[0] + "_int8"
        graph.initializer.append(numpy_helper.from_array(q, name))
        replaced[node.output[0]] = name
        graph.node.remove(node)
    for node in graph.node:
        for i, inp in enumerate(node.input):
            if inp in replaced:
                node.input[i] = replaced[inp]
    _drop_dead_nodes(graph)
    onnx.save(model, str(path))


def _drop_dead_nodes(graph) -> None:
    """Remove Constant/Cast/Identity nodes and initializers nothing reads any more."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {inp for node in graph.node for inp in node.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("Constant", "Cast", "Identity")
                and not any(o in used for o in n.output)]
        if not dead:
            for init in [i for i in graph.initializer if i.name not in used]:
                graph.initializer.remove(init)
            return
        for node in dead:
            graph.node.remove(node)
