"""Where recovery steps can act in a QuantSim's graph: consecutive weight layers, and their inputs.

After BN folding, a chain conv -> [ReLU/ReLU6/identity] -> [quantizer] -> conv is a pair whose
shared channels can be rescaled (CLE, high-bias absorption). LayerNorm -> Linear is where
SmoothQuant folds its scales. Layer inputs for AdaRound/GPTQ are captured with forward hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import fx, nn

from qcore.quant.quantsim import ActQuantizer, QuantSim, QuantWeightLayer

__all__ = ["Pair", "layer_pairs", "norm_linear_pairs", "run_hooked", "capture_inputs", "capture_outputs"]

PASS_THROUGH = (ActQuantizer,)
HOMOGENEOUS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Identity)


@dataclass
class Pair:
    """Weight layer `first` feeding only `second`, through `act` (None: nothing in between)."""

    first: str
    second: str
    act: str | None  # the module path of the activation between them


def _single_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _module(gm: fx.GraphModule, node: fx.Node):
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _follow(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node | None, str | None]:
    """From a weight layer's node, the next weight layer's node along a single-use chain, and the
    activation met on the way (at most one, and only a positively homogeneous one)."""
    act = None
    nxt = _single_user(node)
    while nxt is not None:
        mod = _module(gm, nxt)
        if isinstance(mod, PASS_THROUGH):
            nxt = _single_user(nxt)
        elif isinstance(mod, HOMOGENEOUS) and act is None:
            act, nxt = nxt.target, _single_user(nxt)
        elif isinstance(mod, QuantWeightLayer):
            return nxt, act
        else:
            return None, None
    return None, None


def layer_pairs(sim: QuantSim) -> list[Pair]:
    """Every conv/linear -> conv/linear pair that shares channels one to one (see the module doc)."""
    gm = sim.model
    pairs = []
    for node in gm.graph.nodes:
        if not isinstance(_module(gm, node), QuantWeightLayer):
            continue
        nxt, act = _follow(gm, node)
        if nxt is None:
            continue
        a, b = sim.weight_layers[node.target].layer, sim.weight_layers[nxt.target].layer
        if isinstance(a, nn.Conv2d) and isinstance(b, nn.Conv2d) and _channels_match(a, b):
            pairs.append(Pair(node.target, nxt.target, act))
    return pairs


def _channels_match(a: nn.Conv2d, b: nn.Conv2d) -> bool:
    depthwise = b.groups == b.in_channels == b.out_channels  # one filter per channel (no channel multiplier)
    return a.out_channels == b.in_channels and (b.groups == 1 or depthwise)


def norm_linear_pairs(sim: QuantSim) -> list[tuple[str, list[str]]]:
    """(LayerNorm path, [Linear names]) where the norm's output feeds only those linears (through quantizers)."""
    gm = sim.model
    found = []
    for node in gm.graph.nodes:
        if not isinstance(_module(gm, node), nn.LayerNorm):
            continue
        frontier, linears, ok = list(node.users), [], True
        while frontier:
            user = frontier.pop()
            mod = _module(gm, user)
            if _reads_shape_only(user):
                continue
            if isinstance(mod, ActQuantizer):
                frontier += list(user.users)
            elif isinstance(mod, QuantWeightLayer) and isinstance(mod.layer, nn.Linear):
                linears.append(user.target)
            else:
                ok = False
        if ok and linears:
            found.append((node.target, linears))
    return found


def _reads_shape_only(node: fx.Node) -> bool:
    """`x.shape` / `x.size()`: a use of the tensor that does not see its values."""
    import operator

    if node.op == "call_function" and node.target in (getattr, operator.getitem) and node.args[1:2] == ("shape",):
        return True
    return node.op == "call_method" and node.target in ("size", "dim")


class _AllSeen(Exception):
    """Raised once every hooked module has run on the batch (with `stop_early`)."""


def first_images(batches, values: int):
    """The first images of `batches` holding at most `values` input values (every image of small inputs): what a
    step that passes over the images once per layer (bias correction, GPTQ's Hessian) works on, so its cost stays
    bounded on 224x224 inputs, where a statistic over 256 images already averages millions of values."""
    per_image = batches[0][0].numel()
    n = max(1, values // per_image)
    if hasattr(batches, "first"):  # qcore.zoo.batches.Batches: the first n, made on demand like the rest
        return batches.first(n) if batches.count > n else batches
    out, left = [], n
    for x in batches:
        if left <= 0:
            break
        out.append(x[:left])
        left -= len(out[-1])
    return out


@torch.no_grad()
def run_hooked(sim: QuantSim, hooks: dict, batches: list[torch.Tensor], stop_early: bool = False) -> None:
    """Run `batches` through the sim with forward hook `hooks[name](module, inputs, output)` on each named
    module (weight layers: what the graph calls for them), removed afterwards. With `stop_early`, each batch's
    forward pass stops once every hooked module has run on it: the rest of the network would compute values
    nobody reads (for an early layer of an ImageNet model, most of the pass). Only for modules called once."""
    handles, seen = [], set()

    def wrapped(n, fn):
        def hook(m, i, o):
            fn(m, i, o)
            seen.add(n)
            if stop_early and len(seen) == len(hooks):
                raise _AllSeen
        return hook

    for n, fn in hooks.items():
        mod = sim.wrapper_of(n) if n in sim.weight_layers else sim.model.get_submodule(n)
        handles.append(mod.register_forward_hook(wrapped(n, fn)))
    try:
        for x in batches:
            seen.clear()
            try:
                sim.model(x)
            except _AllSeen:
                pass
    finally:
        for h in handles:
            h.remove()


def _capture(sim: QuantSim, names: Iterable[str], batches: list[torch.Tensor], inputs: bool) -> dict[str, list]:
    got: dict[str, list] = {n: [] for n in names}
    run_hooked(sim, {n: (lambda m, i, o, n=n: got[n].append((i[0] if inputs else o).detach())) for n in got}, batches,
               stop_early=True)
    return got


def capture_inputs(sim: QuantSim, names: Iterable[str], batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each named layer's input over `batches`, as the sim computes it now."""
    return {n: torch.cat(v) for n, v in _capture(sim, names, batches, True).items()}


def capture_outputs(sim: QuantSim, names: Iterable[str], batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each named module's output over `batches` (for weight layers: before their activation)."""
    return {n: torch.cat(v) for n, v in _capture(sim, names, batches, False).items()}
