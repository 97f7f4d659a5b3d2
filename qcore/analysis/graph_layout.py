"""Making a model's graph readable: blocks collapsed by module path, and a top-to-bottom layered layout.

A 50-layer ImageNet model has hundreds of graph nodes. Its modules already say where the repeated blocks are
(`layer1.0`, `features.3`): `collapse` groups nodes by a prefix of their module path (the deepest prefix depth
that leaves at most `max_nodes` nodes, unless a depth is given) and keeps the blocks the user expands as their
single nodes. A block's numbers are its members' (how each is combined is said on the field). `layout` places
nodes in rows by longest path from the input (networkx's topological order), each row ordered by where its
inputs sit, so the picture reads top to bottom in data-flow order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import networkx as nx

from qcore.analysis.graph import GraphEdge, GraphNode, ModelGraph, NodeMetrics

__all__ = ["MAX_NODES", "METRICS", "HOVER_NAMES", "GraphLayout", "block_of", "collapse", "auto_collapse", "blocks", "layout",
           "metric_value", "hover_text", "node_lines", "compare_values"]

MAX_NODES = 60
# what nodes can be coloured by, and which end is good ("high", "low"; None: neither, e.g. a range)
METRICS = {"sqnr": "high", "clip_error": "low", "rounding_error": "low", "range": None, "bits": None, "quantized": None,
           "sensitivity": "high"}


def block_of(node: GraphNode, depth: int) -> str:
    """The block a node belongs to at `depth` parts of its module path ("" for a top-level node: its own)."""
    if not node.module or node.kind in ("input", "output"):
        return ""
    return ".".join(node.module.split(".")[:depth])


def _combine(members: list[GraphNode], exit_node: GraphNode) -> NodeMetrics:
    """A block's numbers: the SQNR at its output, the widest range, the worst quantizer errors, the lowest precision,
    the share quantized, the worst sensitivity."""
    ms = [m.metrics for m in members]

    def pick(attr, fn):
        values = [getattr(m, attr) for m in ms if getattr(m, attr) is not None]
        return fn(values) if values else None

    quantizable = [m.quantized for m in ms if m.quantized is not None]
    lowest = min((m for m in ms if m.bits is not None), key=lambda m: m.bits, default=None)
    return NodeMetrics(
        sqnr_db=exit_node.metrics.sqnr_db, float_min=pick("float_min", min), float_max=pick("float_max", max),
        quant_min=pick("quant_min", min), quant_max=pick("quant_max", max), clip_error=pick("clip_error", max),
        rounding_error=pick("rounding_error", max), bits=lowest.bits if lowest else None,
        precision=lowest.precision if lowest else None,
        quantized=sum(quantizable) / len(quantizable) if quantizable else None, sensitivity=pick("sensitivity", min))


def _group_node(key: str, members: list[GraphNode], outside: set[str]) -> GraphNode:
    if len(members) == 1:
        return members[0]
    exits = [m for m in members if m.id in outside] or members
    exit_node = max(exits, key=lambda m: m.order)
    ops = Counter(m.op for m in members if m.kind in ("conv", "linear")).most_common(1)
    return GraphNode(f"block:{key}", key, "block", ops[0][0] if ops else "block", key, None,
                     min(m.order for m in members), _combine(members, exit_node), tuple(m.id for m in members))


def collapse(graph: ModelGraph, depth: int, expand: tuple[str, ...] = ()) -> ModelGraph:
    """`graph` with the nodes of each block at `depth` merged into one node, except the blocks in `expand`."""
    group = {}
    for n in graph.nodes:
        key = block_of(n, depth)
        group[n.id] = n.id if not key or key in expand else key
    members: dict[str, list[GraphNode]] = {}
    for n in graph.nodes:
        members.setdefault(group[n.id], []).append(n)
    leaving = {e.source for e in graph.edges if group[e.source] != group[e.target]}
    nodes = {key: _group_node(key, ms, leaving) for key, ms in members.items()}
    ids = {n.id: nodes[group[n.id]].id for n in graph.nodes}
    edges = dict.fromkeys((ids[e.source], ids[e.target]) for e in graph.edges if ids[e.source] != ids[e.target])
    return replace(graph, nodes=tuple(sorted(nodes.values(), key=lambda n: n.order)),
                   edges=tuple(GraphEdge(s, t) for s, t in edges))


def _repeated(graph: ModelGraph) -> float:
    """The share of drawn nodes that are blocks named like the members of a repeated sequence (`layer1.0`,
    `features.3`: the last part a number)."""
    named = sum(1 for n in graph.nodes if n.kind == "block" and n.module.rpartition(".")[2].isdigit())
    return named / len(graph.nodes)


def auto_collapse(graph: ModelGraph, max_nodes: int = MAX_NODES, expand: tuple[str, ...] = ()) -> tuple[ModelGraph, int | None]:
    """The graph as is when it has at most `max_nodes` nodes; else collapsed at the module depth that leaves at
    most that many nodes where repeated blocks make up the largest share of the picture (`features.3` rather than
    `features.3.conv`), the deeper on a tie (depth 1 when no depth fits); returns the graph and the depth (None: not collapsed)."""
    if len(graph.nodes) <= max_nodes:
        return graph, None
    deepest = max((len(n.module.split(".")) for n in graph.nodes if n.module), default=1)
    fitting = [(depth, c) for depth in range(deepest, 0, -1)
               if len((c := collapse(graph, depth, expand)).nodes) <= max_nodes]
    if not fitting:
        return collapse(graph, 1, expand), 1
    depth, collapsed = max(fitting, key=lambda dc: (_repeated(dc[1]), dc[0]))
    return collapsed, depth


def blocks(graph: ModelGraph) -> list[str]:
    """The collapsed blocks of a graph, in data-flow order (what a user can expand)."""
    return [n.module for n in graph.nodes if n.kind == "block"]


@dataclass(frozen=True)
class GraphLayout:
    """x, y per node id: rows from y = 0 (the input) downwards (negative), nodes one unit apart in a row."""

    x: dict[str, float]
    y: dict[str, float]
    rows: int


def layout(graph: ModelGraph) -> GraphLayout:
    """Rows by longest path from the inputs (edges against data-flow order, possible between blocks, are left
    out); within a row, nodes sorted by the mean x of their inputs, then by order, one unit apart around the mean
    of those (a chain stays in its column)."""
    order = {n.id: n.order for n in graph.nodes}
    g = nx.DiGraph()
    g.add_nodes_from(sorted(order, key=order.get))
    g.add_edges_from((e.source, e.target) for e in graph.edges if order[e.source] < order[e.target])
    rank: dict[str, int] = {}
    for node in nx.topological_sort(g):
        rank[node] = max((rank[p] + 1 for p in g.predecessors(node)), default=0)
    rows: dict[int, list[str]] = {}
    for node in sorted(rank, key=order.get):
        rows.setdefault(rank[node], []).append(node)
    x: dict[str, float] = {}
    for r in sorted(rows):
        def centre(node: str) -> float:
            xs = [x[p] for p in g.predecessors(node) if p in x]
            return sum(xs) / len(xs) if xs else 0.0

        row = sorted(rows[r], key=lambda n: (centre(n), order[n]))
        middle = sum(centre(n) for n in row) / len(row)
        x.update({n: middle + i - (len(row) - 1) / 2 for i, n in enumerate(row)})
    return GraphLayout(x, {n: -float(rank[n]) for n in rank}, len(rows))


def metric_value(node: GraphNode, metric: str) -> float | None:
    """The number a node is coloured by: sqnr (dB), clip_error, rounding_error, range (float max - min), bits,
    quantized (1 quantized, 0 float, a block's share), sensitivity (top-1 with only this layer quantized)."""
    m = node.metrics
    if metric == "range":
        return None if m.float_min is None else m.float_max - m.float_min
    value = getattr(m, {"sqnr": "sqnr_db"}.get(metric, metric))
    return None if value is None else float(value)


def compare_values(node: GraphNode, metric: str) -> tuple[float | None, float | None]:
    """(float model, quantized model) values of `metric` at a node: range (output max - min in each run) or bits
    (32 in float; the configured precision, 32 where it stays float)."""
    m = node.metrics
    if metric == "range":
        if m.float_min is None:
            return None, None
        return m.float_max - m.float_min, m.quant_max - m.quant_min
    if metric == "bits":
        return (32.0, float(m.bits)) if m.bits is not None else (None, None)
    raise ValueError(f"float and quantized compare by range or bits, not {metric!r}")


HOVER_NAMES = {"sqnr": "output SQNR", "float_range": "float output range", "quant_range": "quantized output range",
               "clip": "clip range", "clip_error": "clipping error", "rounding_error": "rounding error",
               "precision": "precision", "quantized": "quantized", "sensitivity": "top-1, only this layer quantized",
               "members": "nodes inside"}


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def hover_text(node: GraphNode, names: dict[str, str] | None = None) -> str:
    """The node's label and numbers as a plotly hover (`names`: the field names in the reader's language)."""
    return "<br>".join([f"<b>{node.label}</b>", *node_lines(node, names)])


def node_lines(node: GraphNode, names: dict[str, str] | None = None) -> list[str]:
    """The node's kind and numbers, one line each (`names`: the field names in the reader's language)."""
    n, m = {**HOVER_NAMES, **(names or {})}, node.metrics
    lines = [f"{node.kind} · {node.op}"]
    if node.members:
        lines.append(f"{n['members']}: {len(node.members)}")
    if m.sqnr_db is not None:
        lines.append(f"{n['sqnr']}: {m.sqnr_db:.2f} dB")
    if m.float_min is not None:
        lines.append(f"{n['float_range']}: [{_fmt(m.float_min)}, {_fmt(m.float_max)}]")
        lines.append(f"{n['quant_range']}: [{_fmt(m.quant_min)}, {_fmt(m.quant_max)}]")
    if m.clip_min is not None:
        lines.append(f"{n['clip']} ({m.method}): [{_fmt(m.clip_min)}, {_fmt(m.clip_max)}]")
    if m.clip_error is not None:
        lines.append(f"{n['clip_error']}: {_fmt(m.clip_error)} · {n['rounding_error']}: {_fmt(m.rounding_error)}")
    if m.precision is not None:
        lines.append(f"{n['precision']}: {m.precision}")
    if m.quantized is not None and node.members:
        lines.append(f"{n['quantized']}: {m.quantized:.0%}")
    if m.sensitivity is not None:
        lines.append(f"{n['sensitivity']}: {m.sensitivity:.2%}")
    return lines
