"""Fold BatchNorm into the preceding convolution, as deployed INT8 models do.

Weights must be quantized after folding: BN's per-channel scale changes each output channel's
weight range, which is exactly what per-tensor quantization then trips over.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

__all__ = ["bn_affine", "folded", "fold_conv_bn", "fold_bn_in_graph", "unfold_conv_bn"]


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(factor, shift) of an eval-mode BN: bn(y) = (y - mean) * factor + shift, per channel."""
    gamma = bn.weight if bn.affine else torch.ones_like(bn.running_mean)
    beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    return gamma * torch.rsqrt(bn.running_var + bn.eps), beta


def folded(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of conv followed by `bn` (eval mode) as one conv."""
    factor, beta = bn_affine(bn)
    bias = bias if bias is not None else torch.zeros_like(bn.running_mean)
    return weight * factor.reshape(-1, *([1] * (weight.dim() - 1))), (bias - bn.running_mean) * factor + beta


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Rewrite `conv` in place so that conv'(x) == bn(conv(x)) in eval mode."""
    weight, bias = folded(conv.weight, conv.bias, bn)
    conv.weight.copy_(weight)
    conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)


@torch.no_grad()
def unfold_conv_bn(weight: torch.Tensor, bias: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The conv's own weight and bias back from folded ones: the inverse of `folded`."""
    factor, beta = bn_affine(bn)
    return weight / factor.reshape(-1, *([1] * (weight.dim() - 1))), (bias - beta) / factor + bn.running_mean


def fold_bn_in_graph(gm: fx.GraphModule, keep: dict | None = None) -> list[str]:
    """Fold every BatchNorm2d whose input is a Conv2d used only by it; returns the folded BN names.

    With `keep`, a copy of each folded BN is stored under its conv's name (QAT can bring the BN back
    to train its statistics, then fold again)."""
    modules = dict(gm.named_modules())
    folded = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        prev = node.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and isinstance(modules.get(prev.target), nn.Conv2d)):
            continue
        if len(prev.users) != 1:
            continue
        if keep is not None:
            keep[prev.target] = copy.deepcopy(modules[node.target])
        fold_conv_bn(modules[prev.target], modules[node.target])
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded.append(node.target)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return folded
