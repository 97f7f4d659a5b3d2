"""The sim's graph as a chain of blocks: where block-wise reconstruction (BRECQ, QDrop) cuts it.

A residual network is not a chain of layers (the skip path runs past them), but it is a chain of blocks: after
each residual add every earlier value is dead, so the one tensor alive there is all the rest of the network
reads. Those points (cuts) split the graph into regions that run one after the other; each region becomes a
`GraphModule` of its own, sharing the sim's modules (quantizers and weight layers), so what it computes is what
the sim computes. Neighbouring regions are merged until each holds at least `min_layers` weight layers (a plain
conv chain has a cut after every layer).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from qcore.quant.quantsim import QuantSim, QuantWeightLayer

__all__ = ["Block", "split_blocks"]


@dataclass
class Block:
    """A region of the graph that reads one tensor and hands one on: `module(x)` runs it."""

    module: fx.GraphModule
    layers: list[str]  # the weight layers in it, in graph order


def _compute_nodes(graph: fx.Graph) -> list[fx.Node]:
    return [n for n in graph.nodes if n.op not in ("placeholder", "output", "get_attr")]


def _cut_positions(nodes: list[fx.Node]) -> list[int]:
    """Indexes i after which only nodes[i] is still read (no earlier node has a user after i), and nodes[i] is
    one tensor (not a tuple that getitem nodes take apart)."""
    import operator

    where = {n: i for i, n in enumerate(nodes)}
    cuts, reach = [], 0
    for i, n in enumerate(nodes):
        if reach <= i and not any(u.op == "call_function" and u.target is operator.getitem for u in n.users):
            cuts.append(i)
        reach = max([reach, i] + [where.get(u, len(nodes)) for u in n.users])
    return cuts


def _region(gm: fx.GraphModule, nodes: list[fx.Node], start: fx.Node, end: fx.Node) -> fx.GraphModule:
    """The nodes after `start` up to `end` as a module taking start's value."""
    graph, env = fx.Graph(), {}
    env[start] = graph.placeholder("x")

    def arg(a: fx.Node) -> fx.Node:
        if a not in env:  # a constant (get_attr) read inside the region
            env[a] = graph.node_copy(a, arg)
        return env[a]

    inside = False
    for n in nodes:
        if inside:
            env[n] = graph.node_copy(n, arg)
        inside = inside or n is start
        if n is end:
            break
    graph.output(env[end])
    return fx.GraphModule(gm, graph)


def split_blocks(sim: QuantSim, min_layers: int = 2) -> list[Block]:
    """The sim's graph as consecutive blocks (see the module doc); running them in order is the sim's forward.
    Only for graphs with one input and one tensor output."""
    gm = sim.model
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise ValueError("block-wise reconstruction needs a graph with one input")
    nodes = [inputs[0]] + _compute_nodes(gm.graph)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    if output.args[0] is not nodes[-1]:
        raise ValueError("block-wise reconstruction needs a graph whose output is its last computed tensor")
    is_layer = {n: n.op == "call_module" and isinstance(sim.weight_layers.get(n.target), QuantWeightLayer)
                for n in nodes}
    ends, count = [], 0
    cuts = set(_cut_positions(nodes))
    for i, n in enumerate(nodes):
        count += is_layer[n]
        if (i in cuts and count >= min_layers) or i == len(nodes) - 1:
            ends.append(i)
            count = 0
    if len(ends) > 1 and sum(is_layer[n] for n in nodes[ends[-2] + 1:]) < min_layers:
        ends.pop(-2)  # a short tail joins the block before it
    blocks, start = [], 0
    for end in ends:
        layers = [n.target for n in nodes[start + 1: end + 1] if is_layer[n]]
        blocks.append(Block(_region(gm, nodes, nodes[start], nodes[end]), layers))
        start = end
    return blocks
