"""MatMul(x, W) [+ Add(b)] with a constant W, as onnx2torch converts it, rewritten into nn.Linear.

Why: exporters write nn.Linear on a 3-D input (every projection and MLP layer of a transformer: tokens x
channels) as MatMul + Add, since ONNX's Gemm takes 2-D inputs only. onnx2torch turns that into
`torch.matmul(x, buffer)` and an add; the simulation sees no layer with weights there, so a ViT's Linear
layers stayed float. As nn.Linear they are quantized like any other (per-channel weights, activation
quantizers) and export back as MatMul/Gemm. Only a 2-D float32 constant W qualifies; a product of two
activations (attention's q k^T) is left alone.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

__all__ = ["fuse_constant_matmuls"]


def _constant(arg, gm: fx.GraphModule) -> torch.Tensor | None:
    """The tensor a get_attr node reads, or None."""
    if not isinstance(arg, fx.Node) or arg.op != "get_attr":
        return None
    obj = gm
    for part in arg.target.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, torch.Tensor) else None


def _is_add(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_function":
        return node.target in (operator.add, torch.add) and len(node.args) == 2
    mod = modules.get(node.target) if node.op == "call_module" else None
    return (type(mod).__name__ == "OnnxBinaryMathOperation" and mod.math_op_function is torch.add
            and mod.broadcast != 1 and len(node.args) == 2)


def _bias_add(matmul: fx.Node, width: int, gm: fx.GraphModule, modules: dict):
    """(the Add node, its bias) when the product's only use adds a constant vector of `width`, else (None, None)."""
    users = list(matmul.users)
    if len(users) != 1 or not _is_add(users[0], modules):
        return None, None
    add = users[0]
    other = add.args[1] if add.args[0] is matmul else add.args[0]
    bias = _constant(other, gm)
    if bias is None or bias.dim() != 1 or bias.shape[0] != width or bias.dtype != torch.float32:
        return None, None
    return add, bias


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight.t())
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _drop_unused_constants(gm: fx.GraphModule) -> None:
    """get_attr nodes nothing reads any more, and the buffers only they read (the weights now live in the Linear)."""
    readers: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            readers[node.target] = readers.get(node.target, 0) + bool(node.users)
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
            if readers.get(node.target) == 0 and "." in node.target:
                owner, attr = node.target.rsplit(".", 1)
                if hasattr(gm.get_submodule(owner), attr):
                    delattr(gm.get_submodule(owner), attr)


def fuse_constant_matmuls(gm: fx.GraphModule) -> int:
    """Rewrite each OnnxMatMul(x, W constant) [+ bias add] into an nn.Linear call (in place); returns how many."""
    modules = dict(gm.named_modules())
    fused = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or type(modules.get(node.target)).__name__ != "OnnxMatMul" or len(node.args) != 2:
            continue
        weight = _constant(node.args[1], gm)
        if weight is None or weight.dim() != 2 or weight.dtype != torch.float32:
            continue
        add, bias = _bias_add(node, weight.shape[1], gm, modules)
        name = f"{node.target}_linear"
        gm.add_submodule(name, _linear(weight, bias))
        last = add if add is not None else node
        with gm.graph.inserting_after(last):
            new = gm.graph.call_module(name, (node.args[0],))
        last.replace_all_uses_with(new)
        if add is not None:
            gm.graph.erase_node(add)
        gm.graph.erase_node(node)
        fused += 1
    if fused:
        _drop_unused_constants(gm)
    return fused
