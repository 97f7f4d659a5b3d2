"""Architectures of the built-in Fashion-MNIST models (1 x 28 x 28 in, 10 classes out).

Three nets, each chosen to show a different quantization effect:
- `FMResNet`: BN + ReLU convs with residual adds; the ordinary case where INT8 just works, and
  big enough (tens of MMACs) that INT8 kernels beat FP32 at batch 1.
- `FMMobileNetV2`: depthwise-separable inverted residuals with ReLU6; depthwise weights have
  wildly different per-channel ranges, so per-tensor weight quantization collapses.
- `FMGeluNet`: GELU activations, whose small negative tail wastes half an asymmetric range and
  whose unbounded positive side invites outliers (the GELU10 experiment).

All are symbolically traceable by torch.fx (no data-dependent control flow), which QuantSim and
the INT8 backends rely on.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FMResNet", "FMMobileNetV2", "FMGeluNet", "FMViT"]


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """ResNet basic block: conv-bn-relu, conv-bn, + shortcut, relu."""

    def __init__(self, cin: int, cout: int, stride: int = 1, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, cout, 3, stride)
        self.act1 = act()
        self.conv2, self.bn2 = conv_bn(cout, cout, 3, 1)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(*conv_bn(cin, cout, 1, stride))
        self.act2 = act()

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class FMResNet(nn.Module):
    """ResNet-style CNN: stem, three stages of basic blocks (28 -> 14 -> 7), pool, linear."""

    def __init__(self, widths=(32, 64, 128), blocks=(1, 1, 1), num_classes: int = 10, act=nn.ReLU):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, widths[0], 3), act())
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1, act))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear project, + skip."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_skip = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*conv_bn(cin, hidden, 1), nn.ReLU6()]
        layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(), *conv_bn(hidden, cout, 1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_skip else self.block(x)


class FMMobileNetV2(nn.Module):
    """MobileNetV2-style net scaled to 28 x 28: (expand, channels, repeats, stride) per stage."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 1), (6, 64, 2, 2), (6, 96, 1, 1))

    def __init__(self, num_classes: int = 10, stem: int = 32, head: int = 256):
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(*conv_bn(1, stem, 3), nn.ReLU6())]
        cin = stem
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(nn.Sequential(*conv_bn(cin, head, 1), nn.ReLU6()))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(head, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class FMGeluNet(FMResNet):
    """The ResNet shape with GELU in place of ReLU, so activations have a negative tail."""

    def __init__(self, widths=(32, 64, 96), blocks=(1, 1, 1), num_classes: int = 10):
        super().__init__(widths, blocks, num_classes, act=nn.GELU)


class Attention(nn.Module):
    """Multi-head self-attention with its two activation x activation products written as matmuls
    (not F.scaled_dot_product_attention), so torch.fx sees them and the simulation can quantize them."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj(torch.matmul(attn, v).transpose(1, 2).reshape(n, t, d))


class TransformerBlock(nn.Module):
    """Pre-LN block: x + attention(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class FMViT(nn.Module):
    """A small Vision Transformer for 28 x 28: 4 x 4 patches (49 tokens), learned position embedding,
    pre-LN blocks, mean-pooled tokens, linear head. Linear layers, LayerNorm outliers and attention's
    matmuls are where transformer quantization differs from a CNN's."""

    def __init__(self, num_classes: int = 10, dim: int = 64, depth: int = 4, heads: int = 4, mlp: int = 128, patch: int = 4):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, (28 // patch) ** 2, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        x = self.norm(self.blocks(x))
        return self.head(x.mean(1))
