"""Converters qcore adds to onnx2torch 1.5.15's registry, for operator versions current exporters write.

onnx2torch registers converters by (operator, version) and its newest entries are opset 18-era; torch 2.14's
exporters write opsets 18-23 (the dynamo exporter never writes below 18). Registering converters is preferred
over rewriting the ONNX graph or running `onnx.version_converter` down to an older opset: the version
converter has no down-adapter for Pad 19 (it fails with "No Adapter To Version 17 for Pad") nor for
Reduce*-18 with axes computed by a node, and a converter keeps the node's own name in the torch graph.

- type-only versions (`TYPE_ONLY`): later versions that only added element types (float8, int4, bfloat16)
  reuse onnx2torch's newest converter. Versions that changed behaviour (Resize 18/19, AveragePool 19's
  dilations, ...) are not aliased, so they are refused by name rather than converted wrongly;
- Pad 11-25: onnx2torch's Pad 11/13 always reads `pads` at run time with `.tolist()`, which torch.fx cannot
  trace (the simulation could not place a quantizer in such a model), and it has no 18+ (`axes` input,
  'wrap' mode). Here constant pads become a static F.pad; 'wrap' is torch's 'circular';
- Reduce*-18 (+ ReduceMax/Min-20, bool only): `axes` moved from an attribute to an input;
- Reshape 5-25: onnx2torch's reads the target shape at run time (`torch.any(shape == 0)`, which torch.fx
  cannot trace) and refuses allowzero=1, which the dynamo exporter always writes; a constant target shape
  becomes a static reshape (allowzero only matters for a 0 in it, resolved here at conversion);
  A shape computed at run time (it depends on the batch) goes through `reshape_to`, an fx leaf function;
- Expand 8/13: likewise, onnx2torch's module iterates over a runtime tensor; here a static expand, or `expand_to`;
- Split 13/18: constant sizes become static ones (onnx2torch reads them with .tolist() at run time) and
  Split 18's num_outputs (ceil-sized chunks) is honoured;
- Div 7-14: onnx2torch picks float or integer division at run time (`is_floating_point()`, which torch.fx
  cannot trace); the element type is known from shape inference, so the choice is made at conversion;
- Gelu 20 (new in opset 20; earlier exports decompose it): nn.GELU, which the simulation knows;
- Clip 11-13: onnx2torch reads an omitted bound (input name '') as a dynamic one and refuses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["register", "TYPE_ONLY"]

TYPE_ONLY = {  # operator -> versions whose changes were new element types only (onnx/docs/Changelog.md)
    "Identity": (19, 21, 23, 24, 25), "Constant": (19, 21, 23, 24, 25),
    "Shape": (19, 21, 23, 24, 25), "Size": (19, 21, 23, 24, 25), "Cast": (19, 21, 23, 24, 25),
    "CastLike": (19, 21, 23, 24, 25), "ConstantOfShape": (20, 21, 23, 24, 25), "Flatten": (21, 23, 24, 25),
    "Squeeze": (21, 23, 24, 25), "Unsqueeze": (21, 23, 24, 25), "Transpose": (21, 23, 24, 25),
    "Equal": (19,), "Conv": (22,), "ConvTranspose": (22,), "Dropout": (22,), "Elu": (22,),
    "HardSigmoid": (22,), "HardSwish": (22,), "MaxPool": (22,), "GlobalAveragePool": (22,),
    "GlobalMaxPool": (22,), "Selu": (22,), "Softplus": (22,), "InstanceNormalization": (22,),
}
_PAD_VERSIONS = (11, 13, 18, 19, 21, 23, 24, 25)
_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
_REDUCE_18 = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
              "ReduceLogSumExp", "ReduceSumSquare")
_RESHAPE_VERSIONS = (5, 13, 14, 19, 21, 23, 24, 25)
_done = False


@torch.fx.wrap
def reshape_to(x: torch.Tensor, shape: torch.Tensor, allowzero: int = 0) -> torch.Tensor:
    """ONNX Reshape to a shape tensor computed at run time; an fx leaf (its `.tolist()` cannot be traced)."""
    dims = [int(d) for d in shape.tolist()]
    return torch.reshape(x, [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(dims)])


@torch.fx.wrap
def expand_to(x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """ONNX Expand (two-way broadcast) to a shape tensor computed at run time; an fx leaf."""
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(int(d) for d in shape.tolist())))


class DynamicReshape(nn.Module):
    def __init__(self, allowzero: int = 0):
        super().__init__()
        self.allowzero = int(allowzero)

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return reshape_to(x, shape, self.allowzero)


class DynamicExpand(nn.Module):
    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return expand_to(x, shape)


class StaticExpand(nn.Module):
    def __init__(self, shape: list[int]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(torch.broadcast_shapes(tuple(x.shape), self.shape))


class StaticPad(nn.Module):
    """F.pad with pads known at conversion time (torch's order: last dimension first)."""

    def __init__(self, pads: list[int], mode: str, value: float):
        super().__init__()
        self.pads, self.mode, self.value = list(pads), mode, float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "constant":
            return F.pad(x, self.pads, mode="constant", value=self.value)
        return F.pad(x, self.pads, mode=self.mode)


class StaticReshape(nn.Module):
    """torch.reshape to a target known at conversion time; `None` entries copy the input's dimension
    (ONNX's 0 with allowzero=0)."""

    def __init__(self, shape: list[int | None]):
        super().__init__()
        self.shape = list(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.reshape(x, [x.shape[i] if s is None else s for i, s in enumerate(self.shape)])


def _where(node) -> str:
    return f"{node.operation_type} node '{node.name}'"


def _const(name: str, graph, node, what: str):
    from onnx2torch.utils.common import get_const_value

    try:
        value = get_const_value(name, graph)
    except KeyError:
        raise NotImplementedError(f"{_where(node)}: its {what} is computed at run time; only constant {what} "
                                  f"can be converted") from None
    return value.tolist() if isinstance(value, torch.Tensor) else value


def _rank(name: str, graph) -> int | None:
    info = graph.value_info.get(name)
    tensor = info.type.tensor_type if info is not None else None
    return len(tensor.shape.dim) if tensor is not None and tensor.HasField("shape") else None


def _torch_pads(pads: list[int], axes: list[int] | None, rank: int | None, node) -> list[int]:
    """ONNX [begin per axis..., end per axis...] -> torch [last_begin, last_end, previous_begin, ...]."""
    n = len(pads) // 2
    if axes is None:
        if rank is None:
            rank = n
        axes = list(range(rank))
    if any(a >= 0 for a in axes) and rank is None:
        raise NotImplementedError(f"{_where(node)}: pads on axes {axes} of an input of unknown rank")
    neg = [a - rank if a >= 0 else a for a in axes]
    by_axis = {a: (pads[i], pads[i + n]) for i, a in enumerate(neg)}
    out: list[int] = []
    for a in range(-1, min(neg) - 1, -1):
        out.extend(by_axis.get(a, (0, 0)))
    while len(out) > 2 and out[-2:] == [0, 0]:
        out = out[:-2]  # leading (batch, channel) dims unpadded: what torch's reflect/replicate/circular need
    return out


def _pad(node, graph):
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    mode = node.attributes.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in _PAD_MODES:
        raise NotImplementedError(f"{_where(node)}: mode {mode!r} has no torch equivalent")
    names = list(node.input_values) + ["", "", ""]
    pads = [int(p) for p in _const(names[1], graph, node, "pads")]
    value = _const(names[2], graph, node, "constant_value") if names[2] else 0.0
    value = float(value[0] if isinstance(value, list) and value else value or 0.0)
    axes = [int(a) for a in _const(names[3], graph, node, "axes")] if names[3] else None
    module = StaticPad(_torch_pads(pads, axes, _rank(names[0], graph), node), _PAD_MODES[mode], value)
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=(names[0],), outputs=node.output_values))


def _reduce_axes_input(node, graph):
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    names = list(node.input_values) + [""]
    axes = [int(a) for a in _const(names[1], graph, node, "axes")] if names[1] else []
    if not axes and node.attributes.get("noop_with_empty_axes", 0):
        module: nn.Module = nn.Identity()
    else:
        module = OnnxReduceStaticAxes(node.operation_type, axes or None, node.attributes.get("keepdims", 1))
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=(names[0],), outputs=node.output_values))


def _clip(node, graph):
    from onnx2torch.node_converters.clip import _create_torch_module
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    names = list(node.input_values) + ["", ""]
    lo = float(_const(names[1], graph, node, "min")) if names[1] else None
    hi = float(_const(names[2], graph, node, "max")) if names[2] else None
    return OperationConverterResult(torch_module=_create_torch_module(lo, hi),
                                    onnx_mapping=OnnxMapping(inputs=(names[0],), outputs=node.output_values))


def _reshape(node, graph):
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value, onnx_mapping_from_node

    allowzero = node.attributes.get("allowzero", 0)
    try:
        shape = [int(s) for s in get_const_value(node.input_values[1], graph).tolist()]
    except KeyError:  # computed at run time (from the batch size)
        return OperationConverterResult(torch_module=DynamicReshape(allowzero), onnx_mapping=onnx_mapping_from_node(node))
    target = [None if s == 0 and not allowzero else s for s in shape]
    return OperationConverterResult(torch_module=StaticReshape(target),
                                    onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values))


def _expand(node, graph):
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value, onnx_mapping_from_node

    try:
        shape = [int(s) for s in get_const_value(node.input_values[1], graph).tolist()]
    except KeyError:
        return OperationConverterResult(torch_module=DynamicExpand(), onnx_mapping=onnx_mapping_from_node(node))
    return OperationConverterResult(torch_module=StaticExpand(shape),
                                    onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values))


def _split(node, graph):
    from onnx2torch.node_converters.split import OnnxSplit
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    names = list(node.input_values) + [""]
    axis, n = node.attributes.get("axis", 0), len(node.output_values)
    sizes = [int(v) for v in _const(names[1], graph, node, "split")] if names[1] else None
    if sizes is None and node.attributes.get("num_outputs"):
        info = graph.value_info.get(names[0])
        dims = info.type.tensor_type.shape.dim if info is not None else []
        length = dims[axis].dim_value if len(dims) > axis and dims[axis].HasField("dim_value") else None
        if length is not None:
            chunk = -(-length // n)  # Split 18: ceil-sized chunks, the last one smaller
            sizes = [min(chunk, length - i * chunk) for i in range(n)]
    return OperationConverterResult(torch_module=OnnxSplit(num_splits=n, axis=axis, split=sizes),
                                    onnx_mapping=OnnxMapping(inputs=(names[0],), outputs=node.output_values))


class Div(nn.Module):
    """ONNX Div with its element type known: true division for floats, truncating for integers."""

    def __init__(self, floating: bool):
        super().__init__()
        self.floating = floating

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.div(a, b) if self.floating else torch.div(a, b, rounding_mode="trunc")


def _div(node, graph):
    from onnx import TensorProto
    from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    info = graph.value_info.get(node.output_values[0]) or graph.value_info.get(node.input_values[0])
    elem = info.type.tensor_type.elem_type if info is not None else TensorProto.UNDEFINED
    floating = elem in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16)
    integer = elem in (TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT8)
    module = Div(floating) if floating or integer else OnnxBinaryMathOperation("Div")  # unknown: decided at run time
    return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))


def _gelu(node, graph):
    from onnx2torch.utils.common import onnx_mapping_from_node, OperationConverterResult

    approximate = node.attributes.get("approximate", "none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    return OperationConverterResult(torch_module=nn.GELU(approximate=approximate),
                                    onnx_mapping=onnx_mapping_from_node(node))


def _alias_type_only(reg, description) -> None:
    for op, versions in TYPE_ONLY.items():
        known = sorted(d.version for d in reg if d.domain == "" and d.operation_type == op)
        for v in versions:
            older = [k for k in known if k < v]
            key = description("", op, v)
            if older and key not in reg:
                reg[key] = reg[description("", op, older[-1])]


def register() -> None:
    """Add (or replace) qcore's converters in onnx2torch's registry; idempotent."""
    global _done
    if _done:
        return
    from onnx2torch.node_converters import registry

    reg, desc = registry._CONVERTER_REGISTRY, registry.OperationDescription  # no public API to replace one
    _alias_type_only(reg, desc)
    for v in _PAD_VERSIONS:
        reg[desc("", "Pad", v)] = _pad
    for op in _REDUCE_18:
        reg[desc("", op, 18)] = _reduce_axes_input
    for op in ("ReduceMax", "ReduceMin"):
        reg[desc("", op, 20)] = _reduce_axes_input
    for v in (11, 12, 13):
        reg[desc("", "Clip", v)] = _clip
    for v in _RESHAPE_VERSIONS:
        reg[desc("", "Reshape", v)] = _reshape
    for v in (8, 13):
        reg[desc("", "Expand", v)] = _expand
    for v in (13, 18):
        reg[desc("", "Split", v)] = _split
    reg[desc("", "Gelu", 20)] = _gelu
    for v in (7, 13, 14):
        reg[desc("", "Div", v)] = _div
    _done = True
