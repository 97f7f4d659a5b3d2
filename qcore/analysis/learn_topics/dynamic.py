"""Topic 1: dynamic vs static PTQ (the rule; the measurement is runtime/dynamic_study.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from qcore.zoo.report import Report
from qcore.analysis.learn_topics.common import LINEAR_HEAVY_SHARE, Verdict, _faster

__all__ = ["linear_mac_share", "DynamicStaticReport", "dynamic_verdict"]


@torch.no_grad()
def linear_mac_share(module: nn.Module, input_shape: tuple[int, ...]) -> float:
    """The fraction of the model's Conv2d + Linear multiply-accumulates done by Linear layers (one image)."""
    macs = {"linear": 0, "conv": 0}

    def hook(m, inp, out):
        if isinstance(m, nn.Linear):
            macs["linear"] += out.numel() * m.in_features
        else:
            macs["conv"] += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        module(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    total = macs["linear"] + macs["conv"]
    return macs["linear"] / total if total else 0.0


@dataclass
class DynamicStaticReport(Report):
    """FP32, dynamic INT8 and static INT8 of one model: accuracy and interleaved median latency."""

    kind: ClassVar[str] = "learn_dynamic"
    model: str
    eval_images: int
    threads: int
    batch: int
    accuracy: dict[str, float]
    latency_ms: dict[str, float]  # median of interleaved calls
    dynamic_layers: list[str]  # the layers quantize_dynamic actually replaced
    linear_layers: list[str]
    conv_layers: int
    linear_mac_share: float
    static_backend: str
    notes: list[str] = field(default_factory=list)


def dynamic_verdict(r: DynamicStaticReport) -> Verdict:
    """Claim: dynamic INT8 suits Linear-heavy models, static INT8 wins on convolutions. Rule: on a model
    whose Linear layers do >= LINEAR_HEAVY_SHARE of the MACs, dynamic must beat FP32 by LATENCY_MARGIN;
    otherwise static must beat dynamic by LATENCY_MARGIN."""
    t = r.latency_ms
    if r.linear_mac_share >= LINEAR_HEAVY_SHARE:
        ok = _faster(t["dynamic_int8"], t["fp32"])
        return Verdict(ok, "linear_dynamic_faster" if ok else "linear_dynamic_not_faster")
    ok = _faster(t["static_int8"], t["dynamic_int8"])
    return Verdict(ok, "conv_static_faster" if ok else "conv_static_not_faster")
