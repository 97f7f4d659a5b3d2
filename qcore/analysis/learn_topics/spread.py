"""Topic 5: why MobileNet suffers: per-channel weight range spread of depthwise convolutions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from qcore.analysis.evaluate import logits, scores
from qcore.quant.progress import Msg, Progress, silent
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.quant.build import calibrated_sim
from qcore.zoo.report import Report
from qcore.analysis.learn_topics.common import ACCURACY_MARGIN, Verdict

__all__ = ["SPREAD_CAP", "SpreadReport", "channel_spreads", "spread_accuracy", "spread_verdict"]


SPREAD_CAP = 1e6  # max/min of per-channel absmax is capped here (a channel that is all zero gives infinity)


@dataclass
class SpreadReport(Report):
    """Per-output-channel weight range spread of each layer (BN folded), depthwise apart, and (when
    measured) W8A8 PTQ accuracy with per-tensor and per-channel weights."""

    kind: ClassVar[str] = "learn_spread"
    model: str
    rows: list[dict]  # {"layer", "depthwise", "channels", "spread", "zero_channels"}
    median_depthwise: float | None
    median_other: float | None
    fp32_accuracy: float | None = None
    accuracy: dict[str, float] = field(default_factory=dict)  # "per-tensor", "per-channel"
    eval_images: int = 0


def _is_depthwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels


def channel_spreads(sim: QuantSim, name: str = "") -> SpreadReport:
    """max/min over output channels of each channel's absolute maximum, per layer (capped at SPREAD_CAP)."""
    rows = []
    for name, wl in sim.weight_layers.items():
        w = wl.layer.weight.detach()
        amax = w.abs().reshape(w.shape[0], -1).amax(1)
        lo, hi = float(amax.min()), float(amax.max())
        rows.append({"layer": name, "depthwise": _is_depthwise(wl.layer), "channels": int(w.shape[0]),
                     "spread": round(min(SPREAD_CAP, hi / lo) if lo > 0 else SPREAD_CAP, 2),
                     "zero_channels": int((amax == 0).sum())})

    def median(sel):
        vals = [r["spread"] for r in rows if r["depthwise"] == sel]
        return round(float(torch.tensor(vals).median()), 2) if vals else None

    return SpreadReport(name, rows, median(True), median(False))


def spread_accuracy(module: nn.Module, calib: list[torch.Tensor], xs: list[torch.Tensor], labels,
                    progress: Progress | None = None) -> dict[str, float]:
    """Top-1 of W8A8 PTQ (max calibration) with per-tensor and with per-channel weights, and FP32."""
    say = progress or silent
    out = {"FP32": scores(logits(module, xs), labels).top1}
    for i, gran in enumerate(("tensor", "channel")):
        say(0.2 + 0.4 * i, Msg("W8A8 per-{granularity}: calibrating and evaluating", granularity=gran))
        sim = calibrated_sim(module, QuantConfig().with_default(weight_granularity=gran), calib)
        out[f"per-{gran}"] = scores(logits(sim, xs), labels).top1
    return out


def spread_verdict(r: SpreadReport) -> Verdict:
    """Claim: depthwise layers' channels differ wildly in range, so per-tensor weights collapse where
    per-channel holds. Rule: the depthwise median spread is above the other layers', and (when
    measured) per-channel beats per-tensor by ACCURACY_MARGIN. No depthwise layer: does not apply."""
    if r.median_depthwise is None:
        return Verdict(None, "no_depthwise")
    if r.median_other is not None and r.median_depthwise <= r.median_other:
        return Verdict(False, "depthwise_not_wider")
    if r.accuracy and r.accuracy["per-channel"] - r.accuracy["per-tensor"] < ACCURACY_MARGIN:
        return Verdict(False, "per_tensor_holds")
    return Verdict(True, "holds" if r.accuracy else "depthwise_wider")
