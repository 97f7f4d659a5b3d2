"""Run a sim's graph from one node on, with the values it needs from before that node kept from one run.

Why not `sensitivity._PrefixCache`: that one keeps every node's value of a batch (it serves every layer of a
sweep). An edit of ONE layer needs only the frontier: the values computed before the layer's first node that
the layer or anything after it reads (for a ResNet block, its input and the skip branch). Kept per evaluation
batch, that is a few tensors, so the what-if editor can hold them for 1000 images and re-run only the suffix.
"""

from __future__ import annotations

import torch
from torch import fx

__all__ = ["Frontier", "frontier", "run_suffix"]


class Frontier:
    """The values before node `start` that nodes from `start` on read, for one batch (the batch itself too
    when the suffix starts at the graph's input)."""

    def __init__(self, start: int, values: dict[fx.Node, object], x: torch.Tensor | None):
        self.start, self.values, self.x = start, values, x

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.values.values() if isinstance(v, torch.Tensor))


def _last_uses(nodes: list[fx.Node]) -> dict[fx.Node, int]:
    """The index of the last node (in `nodes`) that reads each node."""
    index = {n: i for i, n in enumerate(nodes)}
    last: dict[fx.Node, int] = {}
    for n in nodes:
        for a in n.all_input_nodes:
            last[a] = max(last.get(a, -1), index[n])
    return last


@torch.no_grad()
def frontier(gm: fx.GraphModule, x: torch.Tensor, start: int) -> Frontier:
    """Run nodes [0, start) on `x`, freeing each value after its last use, and keep the frontier."""
    nodes = list(gm.graph.nodes)
    if start <= 0:
        return Frontier(0, {}, x)
    index = {n: i for i, n in enumerate(nodes)}
    wanted = {a for n in nodes[start:] for a in n.all_input_nodes if index[a] < start}
    last = _last_uses(nodes[:start])
    interp = fx.Interpreter(gm)
    interp.args_iter = iter([x])
    interp.env = {}
    for i, node in enumerate(nodes[:start]):
        interp.env[node] = interp.run_node(node)
        for a in node.all_input_nodes:
            if last.get(a) == i and a not in wanted:
                del interp.env[a]
    return Frontier(start, {n: interp.env[n] for n in wanted}, None)


@torch.no_grad()
def run_suffix(gm: fx.GraphModule, front: Frontier):
    """The graph's output, running only nodes from `front.start` on (with the modules as they are now)."""
    nodes = list(gm.graph.nodes)
    suffix = nodes[front.start:]
    last = _last_uses(suffix)
    interp = fx.Interpreter(gm)
    interp.args_iter = iter([front.x])
    interp.env = dict(front.values)
    for i, node in enumerate(suffix):
        value = interp.run_node(node)
        if node.op == "output":
            return value
        interp.env[node] = value
        for a in node.all_input_nodes:
            if last.get(a) == i:
                interp.env.pop(a, None)
    raise RuntimeError("the graph has no output node")
