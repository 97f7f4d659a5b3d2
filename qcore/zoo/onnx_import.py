"""ONNX files as torch modules (onnx2torch), so simulation, sensitivity, QAT and deploy apply to them.

What stands between a real-world .onnx file (torch.onnx.export, legacy or dynamo, opsets 13-23) and
onnx2torch 1.5's converter, in the order load_onnx deals with it:
- exporters write weights as `Identity(initializer)` (torch's deduplicated weights); onnx2torch
  needs a Conv's weight and bias to be initializers, so such Identity nodes are folded away;
- the legacy exporter writes shape-dependent code (timm's 'SAME' padding) as ONNX arithmetic on Shape;
  with the file's static image size those values are constants and are folded (onnx_fold);
- onnx2torch registers converters by operator version and stops at opset 18; qcore registers the newer
  versions current exporters write (Pad 18+, Reduce*-18, type-only versions; onnx_converters);
- converted Add/Mul/Clip/pooling come out as onnx2torch modules the simulation does not know; they
  are rewritten to `operator.add`, `nn.ReLU6`, `F.adaptive_avg_pool2d`, ... (`canonical`), and a transformer's
  Linear layers, written as MatMul(x, W) + Add(b), back into nn.Linear (onnx_linear).
An operator that still cannot be converted is refused with its name, opset and node (OnnxUnsupported).
"""

from __future__ import annotations

import operator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["OnnxUnsupported", "load_onnx"]


class OnnxUnsupported(ValueError):
    """The ONNX file has operators onnx2torch cannot convert; the message names operator, opset and node."""


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else "no message"


def _fold_identity_initializers(model) -> None:
    """Identity(initializer) nodes -> the initializer itself (in place)."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    rename = {n.output[0]: n.input[0] for n in graph.node
              if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    kept = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in rename)]
    for n in kept:
        for i, name in enumerate(n.input):
            n.input[i] = rename.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)


def _opset_of(model, domain: str) -> int | str:
    opsets = {o.domain or "": o.version for o in model.opset_import}
    return opsets.get(domain, opsets.get("", "?") if domain == "ai.onnx" else "?")


def _unconvertible(model) -> list[str]:
    """'Op (opset N, node 'name')' for each operator without a converter (at most 3 node names each)."""
    from onnx2torch.node_converters.registry import get_converter

    nodes: dict[str, list[str]] = {}
    for i, n in enumerate(model.graph.node):
        domain = n.domain or ""
        opset = _opset_of(model, domain)
        try:
            get_converter(n.op_type, opset if isinstance(opset, int) else 1, domain)
        except NotImplementedError:
            key = f"{domain + '.' if domain else ''}{n.op_type} (opset {opset}"
            nodes.setdefault(key, []).append(repr(n.name or f"#{i}"))
    out = []
    for key, names in sorted(nodes.items()):
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        out.append(f"{key}, node{'s' if len(names) > 1 else ''} {', '.join(names[:3])}{more})")
    return out


def _failing_node(exc: Exception, model) -> str:
    """The node onnx2torch's convert() was converting when it raised (its frame's `onnx_node`)."""
    tb = exc.__traceback__
    while tb is not None:
        node = tb.tb_frame.f_locals.get("onnx_node") if tb.tb_frame.f_code.co_name == "convert" else None
        if node is not None and hasattr(node, "operation_type"):
            return (f"{node.operation_type} (opset {_opset_of(model, node.domain or '')}, "
                    f"node {node.name!r})")
        tb = tb.tb_next
    return "a node"


def _prepare(model) -> int:
    """The fixes that come before conversion, in place (see the module docstring); returns how many
    shape-arithmetic nodes were folded."""
    from qcore.zoo.onnx_converters import register
    from qcore.zoo.onnx_fold import fold_static_shapes

    register()
    _fold_identity_initializers(model)
    return fold_static_shapes(model)


def _external_files(model) -> set[str]:
    from onnx import TensorProto

    return {e.value for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL
            for e in t.external_data if e.key == "location"}


def _read(path: Path):
    """The checked ModelProto with its weights. torch's dynamo exporter writes weights to a side file
    (`model.onnx.data`, external_data=True by default): it is read from next to the file, never from
    elsewhere, and a missing one is named with the export option that avoids it."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        files = _external_files(model)
        bad = sorted(f for f in files if Path(f).is_absolute() or ".." in Path(f).parts
                     or not (path.parent / f).is_file())
        if not bad and files:
            onnx.load_external_data_for_model(model, str(path.parent))
        if not bad:
            onnx.checker.check_model(model)
    except Exception as exc:
        raise OnnxUnsupported(f"{path.name} is not a valid ONNX model ({type(exc).__name__}: "
                              f"{_first_line(exc)})") from None
    if bad:
        raise OnnxUnsupported(f"{path.name} keeps its weights in a separate file ({', '.join(bad)}) that is not "
                              f"next to it. Export one file: torch.onnx.export(..., external_data=False).")
    return model


def _declared_input_shape(graph) -> tuple[int, int, int] | None:
    """(C, H, W) of the graph's first input when the file fixes them (the batch may be named or dynamic);
    None when any is symbolic or the input is not 4-D, so the user is asked."""
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    dims = list(inputs[0].type.tensor_type.shape.dim) if inputs else []
    if len(dims) != 4 or not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:]):
        return None
    return tuple(int(d.dim_value) for d in dims[1:])


def load_onnx(path: str | Path) -> fx.GraphModule:
    """An .onnx file as a torch GraphModule with Conv2d/Linear/BN/activation modules and
    torch-level adds; raises OnnxUnsupported naming the operators (opset, node) it cannot convert. The (C, H, W)
    the file fixes, if any, is in `meta["onnx_import"]["input_shape"]`."""
    import onnx
    from onnx2torch import convert

    name = Path(path).name
    model = _read(Path(path))
    folded = _prepare(model)
    missing = _unconvertible(model)
    if missing:
        raise OnnxUnsupported(f"{name} uses operators onnx2torch cannot convert to torch: "
                              f"{'; '.join(missing)}. Export the model without them (or as torch.export .pt2).")
    try:
        gm = convert(model)
    except Exception as exc:  # a converter refusing an attribute combination
        raise OnnxUnsupported(f"{name}: {_failing_node(exc, model)} could not be converted to torch: "
                              f"{type(exc).__name__}: {_first_line(exc)}") from None
    gm.meta["onnx_import"] = {"opset": _opset_of(model, ""), "folded_shape_nodes": folded,
                              "input_shape": _declared_input_shape(model.graph)}
    return canonical(gm)


def _clip_module(mod) -> nn.Module | None:
    lo, hi = getattr(mod, "min_val", None), getattr(mod, "max_val", None)
    lo = float(lo) if lo is not None else None
    hi = float(hi) if hi is not None else None
    if lo == 0.0 and hi == 6.0:
        return nn.ReLU6()
    if lo == 0.0 and hi is None:
        return nn.ReLU()
    if lo is not None and hi is not None:
        return nn.Hardtanh(lo, hi)
    return None


def _rewrite(node: fx.Node, mod: nn.Module, gm: fx.GraphModule) -> bool:
    """One onnx2torch module call -> the torch-level op the simulation and torch.ao know."""
    kind = type(mod).__name__
    args = node.args
    if kind == "OnnxBinaryMathOperation" and len(args) == 2:
        op = {torch.add: operator.add, torch.mul: operator.mul, torch.sub: operator.sub}.get(mod.math_op_function)
        if op is None or mod.broadcast == 1:
            return False
        return _replace(node, gm, lambda g: g.call_function(op, args))
    if kind == "OnnxClip" and len(args) == 1:
        new = _clip_module(mod)
        if new is None:
            return False
        gm.add_submodule(node.target, new)
        return True
    if kind.startswith("OnnxGlobalAveragePool") and len(args) == 1:
        return _replace(node, gm, lambda g: g.call_function(F.adaptive_avg_pool2d, (args[0], 1)))
    if kind == "OnnxGather" and len(args) == 2 and isinstance(args[1], fx.Node):
        return _replace(node, gm, lambda g: _take(g, args[0], args[1], mod._axis))
    return False


def _take(graph: fx.Graph, data, indices: fx.Node, axis: int) -> fx.Node:
    """ONNX Gather as onnx2torch computes it, `input[:, ..., indices]` (numpy.take), written as an indexing op:
    onnx2torch's module checks the indices' dtype in Python, which fx cannot trace when the indices are computed
    at run time (convnext from the dynamo exporter gathers its head's rows by a batch-sized range)."""
    index = graph.call_method("long", (indices,))
    where = (slice(None),) * axis + (index,) if axis >= 0 else (Ellipsis, index) + (slice(None),) * (-axis - 1)
    with graph.inserting_after(index):
        return graph.call_function(operator.getitem, (data, where))


def _replace(node: fx.Node, gm: fx.GraphModule, build) -> bool:
    with gm.graph.inserting_after(node):
        new = build(gm.graph)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return True


def canonical(gm: fx.GraphModule) -> fx.GraphModule:
    """Rewrite onnx2torch's own modules for adds, clips, global pooling and run-time gathers into torch ops (onnx2torch already
    emits nn.ReLU, nn.ReLU6 and nn.Flatten for the common cases), and MatMul(x, W) + Add(b) into nn.Linear."""
    from qcore.zoo.onnx_linear import fuse_constant_matmuls

    fuse_constant_matmuls(gm)
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target in modules:
            _rewrite(node, modules[node.target], gm)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()
