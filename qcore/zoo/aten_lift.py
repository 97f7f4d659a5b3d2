"""Lift an aten-level graph (a torch.export program) back into an nn.Module with real layers.

A torch.export program calls `aten.conv2d(x, weight, bias, ...)` with its weights as graph
inputs; it has no `nn.Conv2d`. The simulation, BN folding and the INT8 exporters all find layers
by module type, so here each call whose weights are constants becomes the module it came from:
convolutions, linears, batch norms and activations are modules again, named after the layer that
produced them in the original model (`features.3.conv.0.0`, from the weight's path); residual adds
and the common shape ops become the torch-level functions torch.ao's INT8 patterns know
(`operator.add`, `torch.flatten`, `F.adaptive_avg_pool2d`, ...). Any other aten call is kept as
it is and runs in float. The result is a plain `fx.GraphModule` (trainable, exportable to ONNX),
so every path of the app treats it like a model traced from Python.

torch has no such pass (`torch.export.unflatten` restores the module tree but keeps the
functional calls), hence this one.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["lift_exported", "lift_graph"]

aten = torch.ops.aten

# aten activation -> a module factory taking the call's non-input arguments
_ACTIVATIONS = {
    aten.relu.default: lambda: nn.ReLU(), aten.relu_.default: lambda: nn.ReLU(),
    aten.silu.default: lambda: nn.SiLU(), aten.silu_.default: lambda: nn.SiLU(),
    aten.hardswish.default: lambda: nn.Hardswish(), aten.hardswish_.default: lambda: nn.Hardswish(),
    aten.sigmoid.default: lambda: nn.Sigmoid(), aten.sigmoid_.default: lambda: nn.Sigmoid(),
    aten.hardsigmoid.default: lambda: nn.Hardsigmoid(), aten.hardsigmoid_.default: lambda: nn.Hardsigmoid(),
    aten.tanh.default: lambda: nn.Tanh(), aten.tanh_.default: lambda: nn.Tanh(),
    aten.gelu.default: lambda approximate="none": nn.GELU(approximate=approximate),
    aten.gelu_.default: lambda approximate="none": nn.GELU(approximate=approximate),
    aten.hardtanh.default: lambda lo=-1.0, hi=1.0: _hardtanh(lo, hi),
    aten.hardtanh_.default: lambda lo=-1.0, hi=1.0: _hardtanh(lo, hi),
}

# aten call -> the torch-level function with the same positional arguments
_FUNCTIONS = {
    aten.add.Tensor: operator.add, aten.add_.Tensor: operator.add,
    aten.mul.Tensor: operator.mul, aten.mul_.Tensor: operator.mul,
    aten.flatten.using_ints: torch.flatten,
    aten.mean.dim: torch.mean,
    aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d,
    aten.max_pool2d.default: F.max_pool2d,
    aten.avg_pool2d.default: F.avg_pool2d,
    aten.cat.default: torch.cat,
    aten.view.default: torch.reshape, aten.reshape.default: torch.reshape,
    aten.permute.default: torch.permute,
    aten.transpose.int: torch.transpose,
    aten.softmax.int: torch.softmax,
    aten.matmul.default: torch.matmul, aten.bmm.default: torch.bmm,
}
_IDENTITY = {aten.dropout.default, aten.dropout_.default, aten.alias.default, aten.clone.default,
             aten.contiguous.default}


def _hardtanh(lo: float, hi: float) -> nn.Module:
    if (lo, hi) == (0.0, 6.0):
        return nn.ReLU6()
    if (lo, hi) == (0.0, float("inf")):
        return nn.ReLU()
    return nn.Hardtanh(lo, hi)


class _Lifter:
    """Copies an aten graph node by node into a new graph over a new root module."""

    def __init__(self, source: fx.GraphModule):
        self.source = source
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.env: dict[fx.Node, object] = {}
        self.used_paths: set[str] = set()

    # --- helpers ----------------------------------------------------------------------------
    def const(self, node) -> torch.Tensor | None:
        """The tensor behind a get_attr node (a weight), else None."""
        if isinstance(node, fx.Node) and node.op == "get_attr":
            return _fetch(self.source, node.target)
        return None

    def install(self, path: str, module: nn.Module) -> str:
        """Put `module` at a dotted path that is free (the layer's own path where possible)."""
        path = path.replace("/", ".") or "layer"
        base, i = path, 1
        while path in self.used_paths or _taken(self.root, path):
            i += 1
            path = f"{base}_{i}"
        self.used_paths.add(path)
        parent = self.root
        *parents, leaf = path.split(".")
        for p in parents:
            if not hasattr(parent, p) or not isinstance(getattr(parent, p), nn.Module):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        parent.add_module(leaf, module)
        return path

    def value(self, n: fx.Node):
        """What node `n` became; a constant nobody lifted becomes a get_attr on first use."""
        val = self.env[n]
        return self.materialize(val) if isinstance(val, _LazyAttr) else val

    def install_copy(self, path: str) -> None:
        """A submodule the source graph calls as is, copied to the same path."""
        if path not in self.used_paths:
            self.install(path, _fetch(self.source, path))

    def arg(self, a):
        return fx.node.map_arg(a, self.value)

    def call_module(self, path: str, module: nn.Module, x) -> fx.Node:
        return self.graph.call_module(self.install(path, module), (self.arg(x),))

    # --- the rules --------------------------------------------------------------------------
    def lift(self, node: fx.Node):
        target = node.target
        if _in_place(node) and _read_after(node):  # out of place would change what later readers see
            return None
        args = list(node.args) + [node.kwargs[k] for k in node.kwargs]
        if target in (aten.conv2d.default, aten.conv2d.padding, aten.convolution.default):
            return self.conv(node)
        if target is aten.linear.default:
            return self.linear(node)
        if target in (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default):
            return self.batch_norm(node)
        if target is aten.layer_norm.default:
            return self.layer_norm(node)
        if target in _ACTIVATIONS:
            return self.call_module(_layer_path(node), _ACTIVATIONS[target](*args[1:]), node.args[0])
        if target in _IDENTITY:
            return self.value(node.args[0])
        if target in _FUNCTIONS and not node.kwargs.get("alpha"):
            return self.graph.call_function(_FUNCTIONS[target], self.arg(node.args), self.arg(dict(node.kwargs)))
        return None

    def conv(self, node: fx.Node):
        x, w, b, *rest = list(node.args) + [None] * (3 - len(node.args))
        weight, bias = self.const(w), self.const(b)
        if weight is None or weight.dim() != 4 or (b is not None and bias is None):
            return None
        if node.target is aten.convolution.default:
            stride, padding, dilation, transposed, _, groups = rest
            if transposed:
                return None
        else:
            defaults = [1, 0, 1, 1]
            stride, padding, dilation, groups = (rest + defaults[len(rest):])[:4]
        groups = int(groups)
        conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=stride,
                         padding=padding, dilation=dilation, groups=groups, bias=bias is not None)
        _set_params(conv, weight, bias)
        return self.call_module(_owner(w), conv, x)

    def linear(self, node: fx.Node):
        x, w, b = (list(node.args) + [None])[:3]
        weight, bias = self.const(w), self.const(b)
        if weight is None or (b is not None and bias is None):
            return None
        lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        _set_params(lin, weight, bias)
        return self.call_module(_owner(w), lin, x)

    def batch_norm(self, node: fx.Node):
        x, w, b, mean, var = node.args[:5]
        if node.target is aten.batch_norm.default:
            training, eps = node.args[5], node.args[7]
        else:
            training, eps = False, node.args[6]
        tensors = [self.const(t) if t is not None else None for t in (w, b, mean, var)]
        if training or tensors[2] is None or tensors[3] is None or _rank(x) != 4:
            return None
        bn = nn.BatchNorm2d(tensors[2].numel(), eps=float(eps), affine=tensors[0] is not None).eval()
        with torch.no_grad():
            if tensors[0] is not None:
                bn.weight.copy_(tensors[0])
                bn.bias.copy_(tensors[1] if tensors[1] is not None else torch.zeros_like(tensors[0]))
            bn.running_mean.copy_(tensors[2])
            bn.running_var.copy_(tensors[3])
        out = self.call_module(_owner(mean), bn, x)
        if node.target is aten.batch_norm.default:
            return out
        return (out,)  # the legit op returns (out, saved_mean, saved_invstd); users take [0]

    def layer_norm(self, node: fx.Node):
        """A LayerNorm module (it stays float, but is named and listed as a layer like the others)."""
        x, shape, w, b, eps = (list(node.args) + [None, None, 1e-5])[:5]
        weight, bias = self.const(w), self.const(b)
        if (w is not None and weight is None) or (b is not None and bias is None):
            return None
        norm = nn.LayerNorm(list(shape), eps=float(eps), elementwise_affine=weight is not None, bias=bias is not None)
        if weight is not None:
            _set_params(norm, weight, bias)
        return self.call_module(_owner(w) if w is not None else node.name, norm, x)

    # --- the copy ---------------------------------------------------------------------------
    def copy(self, node: fx.Node) -> None:
        if node.op == "call_function" and node.target is operator.getitem and isinstance(self.env[node.args[0]], tuple):
            self.env[node] = self.env[node.args[0]][node.args[1]]
            return
        lifted = self.lift(node) if node.op == "call_function" else None
        if lifted is not None:
            self.env[node] = lifted
        elif node.op == "get_attr":
            self.env[node] = self.get_attr(node)
        elif node.op == "call_module" and node.target == "_guards_fn":
            return  # torch.export's input-shape guard: the loader checks the shapes the app uses instead
        elif node.op == "call_module":
            self.install_copy(node.target)
            self.env[node] = self.graph.node_copy(node, self.value)
        elif node.op == "output":
            outs = self.arg(node.args[0])
            self.graph.output(outs[0] if isinstance(outs, (list, tuple)) and len(outs) == 1 else outs)
        else:
            self.env[node] = self.graph.node_copy(node, self.value)

    def get_attr(self, node: fx.Node) -> fx.Node:
        """Constants the lifted layers do not consume (e.g. a class token) are copied lazily: a node is
        created on first use, so weights owned by a lifted layer leave no trace in the new graph."""
        return _LazyAttr(node)

    def materialize(self, lazy: "_LazyAttr") -> fx.Node:
        if lazy.created is None:
            value = _fetch(self.source, lazy.node.target)
            path = lazy.node.target
            owner, _, attr = path.rpartition(".")
            holder = self.root
            if owner:
                for p in owner.split("."):
                    if not hasattr(holder, p):
                        holder.add_module(p, nn.Module())
                    holder = getattr(holder, p)
            if isinstance(value, nn.Parameter):
                holder.register_parameter(attr, nn.Parameter(value.detach().clone(), requires_grad=False))
            elif isinstance(value, torch.Tensor):
                holder.register_buffer(attr, value.detach().clone())
            else:
                setattr(holder, attr, value)
            lazy.created = self.graph.get_attr(path)
        return lazy.created


class _LazyAttr:
    """A get_attr of the source graph not copied yet (see `_Lifter.get_attr`)."""

    def __init__(self, node: fx.Node):
        self.node, self.created = node, None


def _in_place(node: fx.Node) -> bool:
    name = getattr(node.target, "_schema", None)
    return name is not None and node.target._schema.name.endswith("_")


def _read_after(node: fx.Node) -> bool:
    """Whether the tensor an in-place op mutates is read by anything but that op."""
    first = node.args[0] if node.args else None
    return isinstance(first, fx.Node) and any(user is not node for user in first.users)


def _rank(node) -> int | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return val.dim() if isinstance(val, torch.Tensor) else None


def _fetch(module: nn.Module, target: str):
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _taken(root: nn.Module, path: str) -> bool:
    try:
        root.get_submodule(path)
        return True
    except AttributeError:
        return False


def _owner(weight_node) -> str:
    """`features.0.0.weight` -> `features.0.0`: the layer a lifted op is named after."""
    return weight_node.target.rpartition(".")[0] or weight_node.target


def _layer_path(node: fx.Node) -> str:
    """An activation's name: the innermost module that called it in the original model, else the node."""
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1][0]
        if path:
            return path
    return node.name


def _set_params(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)


def lift_graph(source: fx.GraphModule) -> fx.GraphModule:
    """A new GraphModule computing what `source` computes, with the aten layers lifted to modules."""
    lifter = _Lifter(source)
    for node in source.graph.nodes:
        lifter.copy(node)
    gm = fx.GraphModule(lifter.root, lifter.graph)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm.eval()


def lift_exported(program: "torch.export.ExportedProgram") -> fx.GraphModule:
    """`program` (torch.export) as a plain GraphModule with Conv2d/Linear/BatchNorm2d/activation modules."""
    return lift_graph(program.module())
