"""Shape arithmetic on static dimensions folded into constants, before onnx2torch converts a graph.

Why: torch.onnx's legacy exporter writes shape-dependent code as ONNX nodes. timm's 'SAME' padding
(tf_efficientnet*, F.pad with pads computed from x.shape) becomes Shape -> Gather -> Div/Ceil/Sub/Clip ->
Concat -> ... -> Pad. Converted as is, that arithmetic would run at run time in torch: the Pad reads its pads
with `.tolist()` (torch.fx cannot trace it, so the simulation could not place quantizers) and the arithmetic's
Add/Mul would look like activations to the simulation. qcore runs one image size per model, and the file
declares it, so those values are constants; only the batch dimension is dynamic and whatever depends on it is
left alone. onnxruntime's optimizer does not fold them (it folds Shape only when every dimension is static)
and onnx has no public partial evaluator: this pass evaluates nodes with onnx's reference implementation,
tracking shape vectors whose batch entry is unknown (None) through Shape, Gather and Slice.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fold_static_shapes"]

MAX_ELEMENTS = 4096  # shape arithmetic is small; weights are never evaluated here
_NEVER = {"QuantizeLinear", "DequantizeLinear", "RandomNormal", "RandomUniform", "RandomNormalLike",
          "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout", "If", "Loop", "Scan"}


def _dims(model) -> dict[str, list[int | None]]:
    """Static dimensions of every value onnx's shape inference can tell (run on a copy without weights)."""
    import onnx

    light = onnx.ModelProto()
    light.CopyFrom(model)
    for init in light.graph.initializer:  # shapes come from `dims`; values of weights are not needed
        if np.prod(init.dims) > MAX_ELEMENTS:
            init.ClearField("raw_data")
            for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                init.ClearField(field)
    inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
    g = inferred.graph
    out = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return out


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _evaluate(node, values: list, opset: int) -> list[np.ndarray] | None:
    """The node's outputs on constant inputs, with onnx's reference implementation."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    names = [n for n in node.input if n]
    graph = helper.make_graph([node], "fold", [helper.make_empty_tensor_value_info(n) for n in names],
                              [helper.make_empty_tensor_value_info(n) for n in node.output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        outs = ReferenceEvaluator(model).run(None, dict(zip(names, [v for n, v in zip(node.input, values) if n])))
    except Exception:  # an op the reference cannot run here: leave it to onnx2torch
        return None
    return [np.asarray(o) for o in outs]


def _partial(node, known: dict, partial: dict, dims: dict) -> np.ndarray | None:
    """Shape/Gather/Slice on a shape vector with unknown entries: an object array (None = unknown)."""
    if node.op_type == "Shape":
        src = node.input[0]
        shape = list(known[src].shape) if src in known else dims.get(src)
        if shape is None:
            return None
        start, end = _attr(node, "start", 0), _attr(node, "end", None)
        return np.array(shape[start:end], dtype=object)
    vec = partial.get(node.input[0])
    if vec is None or any(i and i not in known for i in node.input[1:]):
        return None
    if node.op_type == "Gather" and _attr(node, "axis", 0) == 0:
        return np.asarray(np.take(vec, known[node.input[1]].astype(np.int64), axis=0), dtype=object)
    if node.op_type == "Slice" and vec.ndim == 1:
        starts, ends = (known[n].astype(np.int64).tolist() for n in node.input[1:3])
        axes = known[node.input[3]].tolist() if len(node.input) > 3 and node.input[3] else [0]
        steps = known[node.input[4]].tolist() if len(node.input) > 4 and node.input[4] else [1]
        if axes not in ([0], [-1]):
            return None
        return vec[slice(starts[0], ends[0], int(steps[0]))]
    return None


def _known_values(model, dims: dict) -> dict[str, np.ndarray]:
    """Values computable without the input images: initializers, Constants, and what follows from them and
    from static dimensions (node outputs only; at most MAX_ELEMENTS each)."""
    from onnx import numpy_helper

    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    known = {i.name: numpy_helper.to_array(i) for i in g.initializer if np.prod(i.dims) <= MAX_ELEMENTS}
    partial: dict[str, np.ndarray] = {}
    computed: dict[str, np.ndarray] = {}
    for node in g.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER:
            continue
        vec = _partial(node, known, partial, dims) if node.op_type in ("Shape", "Gather", "Slice") else None
        if vec is not None and all(v is not None for v in vec.flat):
            outs = [vec.astype(np.int64)]
        elif vec is not None:
            partial[node.output[0]] = vec
            continue
        elif all(not i or i in known for i in node.input):
            outs = _evaluate(node, [known.get(i) for i in node.input], opset)
            if outs is None or any(o.size > MAX_ELEMENTS for o in outs):
                continue
        else:
            continue
        for name, value in zip(node.output, outs):
            known[name] = value
            if node.op_type != "Constant":
                computed[name] = value
    return computed


def fold_static_shapes(model, max_rounds: int = 64) -> int:
    """Replace nodes whose outputs are constants (given the file's static dimensions) by initializers, and
    drop the nodes nothing uses any more; in place. Returns how many nodes were removed.

    Repeated until nothing changes: a Pad whose pads were folded gets a static output shape only when
    shapes are inferred again, and the next block's Shape depends on it."""
    removed = 0
    for _ in range(max_rounds):
        n = _fold_once(model)
        if not n:
            break
        removed += n
    return removed


def _fold_once(model) -> int:
    from onnx import numpy_helper

    g = model.graph
    computed = _known_values(model, _dims(model))
    if not computed:
        return 0
    rest = [n for n in g.node if not all(o in computed for o in n.output)]
    needed = {o.name for o in g.output}
    kept = []
    for node in reversed(rest):  # reverse topological order: drop nodes whose outputs nothing reads
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    g.initializer.extend(numpy_helper.from_array(v, name) for name, v in computed.items()
                         if name in needed and name not in {i.name for i in g.initializer})
    removed = len(g.node) - len(kept)
    del g.node[:]
    g.node.extend(kept)
    return removed
