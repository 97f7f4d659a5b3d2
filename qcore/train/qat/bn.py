"""BN statistics trained during QAT, in front of the folded, fake-quantized weight."""

from __future__ import annotations

import copy

import torch

from qcore.quant.fold import bn_affine, folded, unfold_conv_bn
from qcore.quant.quantsim import QuantSim, QuantWeightLayer

__all__ = ["TrainedBN", "attach_trained_bn", "fold_trained_bn"]


class TrainedBN(torch.nn.Module):
    """A folded BN brought back so that its statistics train (Jacob et al. 2018, as torch.ao's ConvBn
    QAT modules do). It wraps the weight layer where the graph calls it: in training, the conv's own
    weight, scaled by gamma / running std, is fake-quantized exactly as the folded deployed weight will
    be; the scale is undone and the BN runs in train mode on the result (batch statistics; running
    statistics updated). In eval mode it is the wrapped layer, whose folded weight `fold()` wrote."""

    def __init__(self, wl: QuantWeightLayer, bn: torch.nn.BatchNorm2d):
        super().__init__()
        self.wl = wl
        w, b = unfold_conv_bn(wl.layer.weight, wl.layer.bias, bn)
        self.weight, self.bias = torch.nn.Parameter(w.clone()), torch.nn.Parameter(b.clone())
        self.bn = copy.deepcopy(bn).train()
        for p in self.bn.parameters():
            p.requires_grad_(True)

    def forward(self, x):
        if not self.training:
            return self.wl(x)
        f = bn_affine(self.bn)[0]
        w = self.weight * f.reshape(-1, 1, 1, 1)
        y = self.wl.layer._conv_forward(x, self.wl.quantize(w) if self.wl.enabled else w, None)
        return self.bn(y / f.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1))

    @torch.no_grad()
    def fold(self) -> None:
        """Write the folded weight and bias into the conv, in place (the optimizer holds these very
        parameters once the BN is gone)."""
        weight, bias = folded(self.weight, self.bias, self.bn)
        self.wl.layer.weight.copy_(weight)
        self.wl.layer.bias.copy_(bias)


def attach_trained_bn(sim: QuantSim) -> int:
    """Wrap every conv whose BN the sim folded; returns how many."""
    for name, bn in sim.bn_of.items():
        sim.wrap_weight_layer(name, TrainedBN(sim.weight_layers[name], bn))
    return len(sim.bn_of)


def fold_trained_bn(sim: QuantSim, detach: bool) -> None:
    """Fold the trained BNs into their convs (for an evaluation, or for good when `detach`)."""
    for name in sim.bn_of:
        wrapper = sim.wrapper_of(name)
        if isinstance(wrapper, TrainedBN):
            wrapper.fold()
            if detach:
                sim.unwrap_weight_layer(name)
    sim.weights_changed()
