"""Small nets, one per construct of ImageNet-class graphs, for the per-op INT8 fidelity tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _cbr(cin: int, cout: int, k: int = 3, stride: int = 1, pad: int = 1, groups: int = 1, act=nn.ReLU) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout), act())


class Padding(nn.Module):
    """Symmetric conv padding, TF 'same' (F.pad (0, 1, 0, 1) before a stride-2 conv), and a wider asymmetric pad."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = _cbr(3, 8), _cbr(8, 8, stride=2, pad=0), _cbr(8, 8, pad=0)

    def forward(self, x):
        x = self.b(F.pad(self.a(x), (0, 1, 0, 1)))
        return self.c(F.pad(x, (1, 2, 0, 1)))


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.pw, self.dw, self.pwl = _cbr(3, 16, 1, pad=0, act=nn.ReLU6), _cbr(16, 16, groups=16, act=nn.ReLU6), _cbr(16, 8, 1, pad=0, act=nn.Identity)

    def forward(self, x):
        return self.pwl(self.dw(self.pw(x)))


class SqueezeExcite(nn.Module):
    """EfficientNet's block: SiLU, then SE (mean, reduce conv, SiLU, expand conv, sigmoid x mul)."""

    def __init__(self):
        super().__init__()
        self.stem = _cbr(3, 16, act=nn.SiLU)
        self.reduce, self.expand = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.proj = _cbr(16, 8, 1, pad=0, act=nn.Identity)

    def forward(self, x):
        x = self.stem(x)
        s = torch.sigmoid(self.expand(F.silu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return self.proj(x * s)


class HardSwish(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = _cbr(3, 16, act=nn.Hardswish), _cbr(16, 8, act=nn.Hardswish)

    def forward(self, x):
        return self.b(self.a(x))


class ResidualConcatPool(nn.Module):
    """A residual add, a concatenation of two branches, average pooling (3x3 stride 1, 2x2, global) and a head."""

    def __init__(self):
        super().__init__()
        self.stem, self.body = _cbr(3, 8), _cbr(8, 8, act=nn.Identity)
        self.left, self.right, self.mix = _cbr(8, 8), _cbr(8, 4, 1, pad=0), _cbr(12, 8)
        self.pool3, self.pool2, self.after = nn.AvgPool2d(3, 1, 1), nn.AvgPool2d(2), _cbr(8, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.body(x))
        x = self.mix(torch.cat([self.left(x), self.right(x)], 1))
        x = self.after(self.pool2(self.pool3(x)))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


CONSTRUCTS = {"padding": Padding, "depthwise": Depthwise, "se": SqueezeExcite, "hardswish": HardSwish,
              "residual_concat_pool": ResidualConcatPool}
