"""Topic 3: SmoothQuant, activation outliers migrated into the weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from qcore.analysis.evaluate import logits, scores
from qcore.quant.progress import Msg, Progress, silent
from qcore.quant.qconfig import QuantConfig, RecoveryStep
from qcore.quant.quantsim import QuantSim
from qcore.quant.build import calibrated_sim
from qcore.quant.recovery.graph import norm_linear_pairs
from qcore.zoo.report import Report
from qcore.analysis.learn_topics.common import SMOOTH_ALPHA, SMOOTH_GAP, Verdict

__all__ = ["SmoothQuantReport", "smoothquant_topic", "smoothquant_verdict"]


@dataclass
class SmoothQuantReport(Report):
    """Activation outliers of LayerNorm -> Linear inputs before and after SmoothQuant, and A8 accuracy."""

    kind: ClassVar[str] = "learn_smoothquant"
    model: str
    applies: bool
    alpha: float = 0.5
    pairs: list[dict] = field(default_factory=list)  # {"norm", "linears", "before", "after", "outlier_before/after"}
    fp32_accuracy: float | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    eval_images: int = 0
    act_bits: int = 8


def _outlier_ratio(channel_max: list[float]) -> float:
    """The largest channel's maximum over the median channel's: how far the outliers stick out."""
    t = torch.tensor(channel_max)
    return round(float(t.max() / t.median().clamp_min(1e-12)), 2)


def smoothquant_topic(module: nn.Module, calib: list[torch.Tensor], xs: list[torch.Tensor] | None, labels,
                      alpha: float = SMOOTH_ALPHA, act_bits: int = 8, name: str = "",
                      progress: Progress | None = None) -> SmoothQuantReport:
    """W8A`act_bits` PTQ with and without SmoothQuant (alpha) on the same calibration images; the per-channel
    maxima SmoothQuant measured and left; accuracies when evaluation batches are given."""
    say = progress or silent
    base = QuantConfig().with_default(act_bits=act_bits)
    if not norm_linear_pairs(QuantSim(module, base)):
        return SmoothQuantReport(name, False, alpha, act_bits=act_bits)
    say(0.1, Msg("calibrating plain PTQ"))
    plain = calibrated_sim(module, base, calib)
    say(0.3, Msg("SmoothQuant, then calibrating"))
    smoothed = calibrated_sim(module, QuantConfig(recovery=(RecoveryStep("smoothquant", (("alpha", alpha),)),))
                                   .with_default(act_bits=act_bits), calib)
    changes = smoothed.recovery_results[0].changes["pairs"]
    pairs = [{"norm": n, "linears": p["linears"], "before": p["act_max_before"], "after": p["act_max_after"],
              "outlier_before": _outlier_ratio(p["act_max_before"]), "outlier_after": _outlier_ratio(p["act_max_after"])}
             for n, p in changes.items()]
    report = SmoothQuantReport(name, True, alpha, pairs, act_bits=act_bits)
    if xs is not None:
        say(0.5, Msg("evaluating FP32, PTQ and PTQ + SmoothQuant"))
        report.fp32_accuracy = scores(logits(module, xs), labels).top1
        report.accuracy_before = scores(logits(plain, xs), labels).top1
        report.accuracy_after = scores(logits(smoothed, xs), labels).top1
        report.eval_images = len(labels)
    say(1.0, Msg("done"))
    return report


def smoothquant_verdict(r: SmoothQuantReport) -> Verdict:
    """Claim: migrating the outliers into the weights flattens the activations and improves A8 accuracy.
    Rule: the median pair's outlier ratio falls, and (when measured) plain A8 PTQ is at least SMOOTH_GAP below
    FP32 and SmoothQuant's A8 accuracy is above plain A8's."""
    if not r.applies:
        return Verdict(None, "no_norm_linear")
    before = sorted(p["outlier_before"] for p in r.pairs)[len(r.pairs) // 2]
    after = sorted(p["outlier_after"] for p in r.pairs)[len(r.pairs) // 2]
    if after >= before:
        return Verdict(False, "outliers_not_reduced")
    if r.accuracy_after is None:
        return Verdict(True, "outliers_reduced")
    if r.fp32_accuracy - r.accuracy_before < SMOOTH_GAP:
        return Verdict(False, "no_gap")  # plain A8 already matches FP32: nothing for the migration to win back
    return Verdict(True, "holds") if r.accuracy_after > r.accuracy_before else Verdict(False, "accuracy_not_improved")
