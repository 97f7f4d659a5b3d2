"""ONNX files as torch modules (onnx2torch), so simulation, sensitivity, QAT and deploy apply to them.

Three things stand between a real-world .onnx file and onnx2torch 1.5's converter:
- exporters write weights as `Identity(initializer)` (torch's deduplicated weights); onnx2torch
  needs a Conv's weight and bias to be initializers, so such Identity nodes are folded away;
- onnx2torch registers converters by operator version and stops at opset 18. ONNX's later versions
  of some operators (19, 21, 22, 23) only added element types (float8, int4, bfloat16); those reuse
  the newest converter (`_TYPE_ONLY`). Operators whose new versions changed behaviour (Resize,
  AveragePool's dilations, Pad's wrap mode, QuantizeLinear's blocks, ...) are not aliased;
- converted Add/Mul/Clip/pooling come out as onnx2torch modules the simulation does not know; they
  are rewritten to `operator.add`, `nn.ReLU6`, `F.adaptive_avg_pool2d`, ... (`canonical`).
Anything onnx2torch cannot convert is refused up front with the list of operators.
"""

from __future__ import annotations

import operator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["OnnxUnsupported", "load_onnx"]

_TYPE_ONLY = {  # operator -> versions whose changes were new element types only (onnx/docs/Changelog.md)
    "Identity": (19, 21, 23), "Constant": (19, 21, 23), "Reshape": (19, 21, 23), "Shape": (19, 21, 23),
    "Size": (19, 21, 23), "Cast": (19, 21, 23), "CastLike": (19, 21, 23), "ConstantOfShape": (20, 21, 23),
    "Flatten": (21, 23), "Squeeze": (21, 23), "Unsqueeze": (21, 23), "Transpose": (21, 23),
    "Equal": (19,), "Conv": (22,), "ConvTranspose": (22,), "Dropout": (22,), "Elu": (22,),
    "HardSigmoid": (22,), "HardSwish": (22,), "MaxPool": (22,), "GlobalAveragePool": (22,),
    "GlobalMaxPool": (22,), "Selu": (22,), "Softplus": (22,), "InstanceNormalization": (22,),
}


class OnnxUnsupported(ValueError):
    """The ONNX file has operators onnx2torch cannot convert; the message lists them."""


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else "no message"


def _register_type_only_versions() -> None:
    from onnx2torch.node_converters import registry

    reg = registry._CONVERTER_REGISTRY  # onnx2torch has no public API to alias a version
    for op, versions in _TYPE_ONLY.items():
        known = sorted(d.version for d in reg if d.domain == "" and d.operation_type == op)
        for v in versions:
            older = [k for k in known if k < v]
            key = registry.OperationDescription("", op, v)
            if older and key not in reg:
                reg[key] = reg[registry.OperationDescription("", op, older[-1])]


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


def _unconvertible(model) -> list[str]:
    from onnx2torch.node_converters.registry import get_converter

    opsets = {o.domain or "": o.version for o in model.opset_import}
    missing = []
    for n in model.graph.node:
        domain = n.domain or ""
        try:
            get_converter(n.op_type, opsets.get(domain, opsets.get("", 1)), domain or "")
        except NotImplementedError:
            missing.append(f"{domain + '.' if domain else ''}{n.op_type} (opset {opsets.get(domain, '?')})")
    return sorted(set(missing))


def load_onnx(path: str | Path) -> fx.GraphModule:
    """An .onnx file as a torch GraphModule with Conv2d/Linear/BN/activation modules and
    torch-level adds; raises OnnxUnsupported with the operators it cannot convert."""
    import onnx
    from onnx2torch import convert

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise OnnxUnsupported(f"{Path(path).name} is not a valid ONNX model ({type(exc).__name__}: "
                              f"{_first_line(exc)})") from None
    _register_type_only_versions()
    _fold_identity_initializers(model)
    missing = _unconvertible(model)
    if missing:
        raise OnnxUnsupported(f"{Path(path).name} uses operators onnx2torch cannot convert to torch: "
                              f"{', '.join(missing)}. Export the model without them (or as torch.export .pt2).")
    try:
        gm = convert(model)
    except Exception as exc:  # a converter refusing an attribute combination
        raise OnnxUnsupported(f"{Path(path).name} could not be converted to torch: {type(exc).__name__}: "
                              f"{_first_line(exc)}") from None
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
    return False


def _replace(node: fx.Node, gm: fx.GraphModule, build) -> bool:
    with gm.graph.inserting_after(node):
        new = build(gm.graph)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return True


def canonical(gm: fx.GraphModule) -> fx.GraphModule:
    """Rewrite onnx2torch's own modules for adds, clips and global pooling into torch ops (onnx2torch already
    emits nn.ReLU, nn.ReLU6 and nn.Flatten for the common cases)."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target in modules:
            _rewrite(node, modules[node.target], gm)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()
