"""The model's data-flow graph, read from a QuantSim's fx graph, for the question "which layer causes the drop?".

The QuantSim's traced graph is the model as it is simulated: BN folded into convs, a weight quantizer in every
Conv2d/Linear and an activation quantizer wherever a deployed INT8 model requantizes. Its nodes become graph
nodes when a user would recognise them (layers, activation quantizers, adds, concats, pools, activations,
norms, products); everything else (flatten, views, identities, dropout) is passed through, and its edges are
joined up, so the edges keep data-flow order. The numbers on each node come from `graph_metrics`.
"""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from qcore.quant.quantsim import ActQuantizer, QuantWeightLayer

__all__ = ["KINDS", "NodeMetrics", "GraphNode", "GraphEdge", "ModelGraph", "node_kind", "module_path", "graph_nodes",
           "graph_edges"]

# every kind a node can have, in the order a legend lists them; "block" is a collapsed group of nodes
KINDS = ("input", "conv", "linear", "quant", "add", "concat", "pool", "act", "norm", "mul", "output", "block")
_ADDS = (operator.add, operator.iadd, torch.add)
_CATS = (torch.cat, torch.concat, torch.stack)
_ACT_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.hardtanh, torch.clamp, F.gelu, F.silu, F.hardswish, torch.sigmoid,
                  F.sigmoid, F.hardsigmoid, torch.tanh, F.softmax, torch.softmax, F.leaky_relu, F.elu, F.mish)
_POOL_FUNCTIONS = (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d, torch.mean)
_MUL_FUNCTIONS = (operator.mul, torch.mul, torch.matmul, operator.matmul, torch.bmm)
_METHODS = {"add": "add", "add_": "add", "mean": "pool", "relu": "act", "relu_": "act", "sigmoid": "act",
            "softmax": "act", "tanh": "act", "mul": "mul", "matmul": "mul"}
_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh,
                nn.Mish, nn.LeakyReLU, nn.ELU, nn.Softmax)


@dataclass(frozen=True)
class NodeMetrics:
    """What was measured at one node (None: not measured there, or not meaningful for its kind).

    `sqnr_db`: the quantized model's output at this node against the float model's, on the probe images.
    `float_min/max`, `quant_min/max`: the output's range in the float and the quantized model (probe images).
    `clip_*`, `rounding_error`, `method`: an activation quantizer's range and its estimated expected squared
    error per value (qcore.quant.calibration), from the whole calibration pass.
    `bits`/`precision`: what the QuantConfig gives the node (weights of a layer, the grid of a quantizer; 32 and
    "fp32" where it stays float). `quantized`: 1.0 quantized, 0.0 float (a block: the share of its quantizable
    nodes that are quantized). `sensitivity`: top-1 with only this layer quantized (a SensitivityReport's).
    """

    sqnr_db: float | None = None
    float_min: float | None = None
    float_max: float | None = None
    quant_min: float | None = None
    quant_max: float | None = None
    clip_min: float | None = None
    clip_max: float | None = None
    clip_error: float | None = None
    rounding_error: float | None = None
    method: str | None = None
    bits: int | None = None
    precision: str | None = None
    quantized: float | None = None
    sensitivity: float | None = None


@dataclass(frozen=True)
class GraphNode:
    """One node: `id` is the fx node's name (unique), `label` what the user reads, `module` the module path it
    belongs to (what blocks are grouped by), `layer` the QuantConfig entry that governs it (conv/linear/quant)."""

    id: str
    label: str
    kind: str
    op: str
    module: str
    layer: str | None
    order: int
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    members: tuple[str, ...] = ()  # a collapsed block: the ids of the nodes inside


@dataclass(frozen=True)
class GraphEdge:
    source: str
    target: str


@dataclass(frozen=True)
class ModelGraph:
    """The graph of one model under one config; `probe_images` is how many calibration images the SQNR and
    output ranges were measured on, `calib_images` how many calibrated the quantizers."""

    model: str
    config: dict
    calib_images: int
    probe_images: int
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    sensitivity_from: str | None = None  # what the sensitivity numbers come from (None: none given)

    def node(self, node_id: str) -> GraphNode:
        return next(n for n in self.nodes if n.id == node_id)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        """Strict JSON: an infinite SQNR (an exact match) and other non-finite numbers become null."""
        return json.dumps(_finite(self.to_dict()), indent=2, allow_nan=False) + "\n"


def _finite(o):
    if isinstance(o, float):
        return o if o == o and abs(o) != float("inf") else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def node_kind(node: fx.Node, modules: dict) -> str | None:
    """The kind of graph node an fx node becomes, or None when it is passed through."""
    if node.op in ("placeholder", "output"):
        return "input" if node.op == "placeholder" else "output"
    if node.op == "call_module":
        mod = modules.get(node.target)
        if isinstance(mod, QuantWeightLayer):
            return "conv" if isinstance(mod.layer, nn.Conv2d) else "linear"
        if isinstance(mod, ActQuantizer):
            return "quant"
        if isinstance(mod, _ACT_MODULES):
            return "act"
        name = type(mod).__name__
        return "pool" if "Pool" in name else "norm" if "Norm" in name else "conv" if isinstance(mod, nn.Conv2d) else None
    if node.op == "call_method":
        return _METHODS.get(node.target)
    if node.op == "call_function":
        for kind, targets in (("add", _ADDS), ("concat", _CATS), ("act", _ACT_FUNCTIONS), ("pool", _POOL_FUNCTIONS),
                              ("mul", _MUL_FUNCTIONS)):
            if node.target in targets:
                return kind
    return None


def module_path(node: fx.Node, modules: dict) -> str:
    """The module a node belongs to: its own path for a module call, the innermost calling module for a function
    (fx records it while tracing), the quantized node's for a quantizer; "" at the top level."""
    if node.op == "call_module" and not isinstance(modules.get(node.target), ActQuantizer):
        return node.target
    if node.op == "call_module":
        source = node.all_input_nodes[0] if node.all_input_nodes else None
        return module_path(source, modules) if source is not None and source.op != "placeholder" else ""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    key, value = list(stack.items())[-1]
    return value[0] if isinstance(value, tuple) and isinstance(value[0], str) else str(key)


def _label(node: fx.Node, kind: str, modules: dict) -> tuple[str, str, str | None]:
    """(label, op, layer) of a kept node."""
    if kind in ("input", "output"):
        return kind, kind, None
    if kind == "quant":
        q = modules[node.target]
        return f"Q({q.name})", "ActQuantizer", q.name
    if kind in ("conv", "linear") and isinstance(modules.get(node.target), QuantWeightLayer):
        return node.target, type(modules[node.target].layer).__name__, node.target
    if node.op == "call_module":
        return node.target, type(modules[node.target]).__name__, None
    op = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return node.name, op, None


def graph_nodes(gm: fx.GraphModule, keep: set[str] | None = None) -> list[GraphNode]:
    """The graph nodes of `gm` in data-flow order, without metrics; `keep`: only these fx node names."""
    modules = dict(gm.named_modules())
    out = []
    for i, node in enumerate(gm.graph.nodes):
        kind = node_kind(node, modules)
        if kind is None or (keep is not None and node.name not in keep):
            continue
        label, op, layer = _label(node, kind, modules)
        out.append(GraphNode(node.name, label, kind, op, module_path(node, modules), layer, i))
    return out


def graph_edges(gm: fx.GraphModule, kept: set[str]) -> list[GraphEdge]:
    """Edges between kept nodes in data-flow order; a node passed through hands its inputs on to its users."""
    sources: dict[str, list[str]] = {}  # fx node -> the kept nodes that feed it (itself when kept)
    edges: list[GraphEdge] = []
    for node in gm.graph.nodes:
        feeding = list(dict.fromkeys(s for a in node.all_input_nodes for s in sources.get(a.name, [])))
        if node.name in kept:
            edges += [GraphEdge(s, node.name) for s in feeding]
            sources[node.name] = [node.name]
        else:
            sources[node.name] = feeding
    return edges
