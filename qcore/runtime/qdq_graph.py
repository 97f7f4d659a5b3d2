"""Cut a QDQ model into one small model per quantized op, from its input integers to its output integers.

Each activation QuantizeLinear in the exported model is one of the simulation's activation
quantizers. What produces it (DequantizeLinear of the previous quantizers' integers, the int8
weights, the conv or add between) is a small graph of its own; given the very integers the
simulation fed it, ONNX Runtime fuses it as it fuses the whole model (DQ -> Conv -> Q becomes
QLinearConv) and its output can be compared with the simulation's integers at that op alone,
without the one-step differences of the layers before compounding through depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

__all__ = ["OpGraph", "activation_quantizers", "op_graphs"]


@dataclass
class OpGraph:
    """The sub-model producing one activation quantizer's integers."""

    output: str  # the QuantizeLinear's output tensor
    inputs: list[str]  # earlier quantizers' integer tensors (uint8/int8), or the model's float input
    model: onnx.ModelProto


def activation_quantizers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """QuantizeLinear nodes of activations (not of constant weights), in graph order."""
    consts = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in consts]


def op_graphs(model: onnx.ModelProto) -> list[OpGraph]:
    """One sub-model per activation quantizer, in graph order."""
    quantizers = activation_quantizers(model)
    boundary = {q.output[0] for q in quantizers} | {i.name for i in model.graph.input}
    return [_op_graph(model, q, boundary) for q in quantizers]


def _op_graph(model: onnx.ModelProto, q: onnx.NodeProto, boundary: set[str]) -> OpGraph:
    """Nodes from `q` back to the nearest quantizer outputs (or graph inputs), constants included."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    chosen, inputs, seen = {id(q): q}, [], set()
    stack = [t for t in q.input if t]
    while stack:
        t = stack.pop()
        if t in seen or t in inits:
            continue
        seen.add(t)
        if t in boundary:
            inputs.append(t)
            continue
        node = producer[t]
        chosen[id(node)] = node
        stack.extend(x for x in node.input if x)
    nodes = [n for n in graph.node if id(n) in chosen]
    used = {x for n in nodes for x in n.input}
    value_infos = [_input_info(model, t) for t in sorted(inputs)]
    sub = helper.make_graph(nodes, f"op_{q.output[0]}", value_infos,
                            [helper.make_tensor_value_info(q.output[0], _q_dtype(model, q), None)],
                            [inits[t] for t in sorted(used) if t in inits])
    out = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return OpGraph(q.output[0], sorted(inputs), out)


def _input_info(model: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    """Graph inputs keep their declared type; a quantizer's output has its zero-point's type."""
    for i in model.graph.input:
        if i.name == name:
            return i
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.output[0] == name)
    return helper.make_tensor_value_info(name, _q_dtype(model, q), None)


def _q_dtype(model: onnx.ModelProto, q: onnx.NodeProto) -> int:
    """uint8 or int8: the element type of a QuantizeLinear's zero-point (a Cast, Constant or initializer)."""
    if len(q.input) < 3:
        return TensorProto.UINT8
    zp = q.input[2]
    for i in model.graph.initializer:
        if i.name == zp:
            return i.data_type
    for n in model.graph.node:
        if zp in n.output:
            if n.op_type == "Cast":
                return next(a.i for a in n.attribute if a.name == "to")
            if n.op_type == "Constant":
                return n.attribute[0].t.data_type
            if n.op_type == "Identity":
                return _q_dtype(model, helper.make_node("QuantizeLinear", ["", "", n.input[0]], [""]))
    return TensorProto.UINT8
