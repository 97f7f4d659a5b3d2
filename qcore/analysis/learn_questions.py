"""The Learn page's interview questions, each answered by an experiment on the loaded model.

a. Why simulate quantization in QAT instead of training with real integer ops? `ste_gradients`
   measures it on a real weight tensor: the gradient of round() is zero everywhere, the
   straight-through estimator of fake quantization passes 1 inside the clip range and 0 outside.
b. When must QAT be used instead of PTQ? and c. Does QAT need the whole training set again? Both
   run the engine's own QAT (`qcore.train.qat.run_qat`, started by the page, since analysis sits
   below train); the verdicts here read its report (`QATReport.to_dict()`).

Each verdict is `learn_topics.Verdict`: an explicit rule over the measured numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from qcore.analysis.learn_topics import Verdict
from qcore.quant.fakequant import fake_quantize
from qcore.quant.qparams import QScheme
from qcore.zoo.report import Report

__all__ = ["QAT_MARGIN", "RECOVERED_SHARE", "SteReport", "ste_gradients", "ste_verdict", "QatNeedReport", "qat_need",
           "qat_need_verdict", "QatDataReport", "qat_data", "qat_data_verdict"]

QAT_MARGIN = 0.01  # QAT must beat PTQ by one percentage point of top-1 to count as needed
RECOVERED_SHARE = 0.5  # "most of the accuracy": at least half of what PTQ lost, won back


@dataclass
class SteReport(Report):
    """Gradients of round() and of fake quantization (STE) with respect to one layer's real weights."""

    kind: ClassVar[str] = "learn_ste"
    layer: str
    weights: int
    bits: int
    clip: float  # the symmetric clip range is [-clip, clip]: the `clip_quantile` of |w|
    clip_quantile: float
    round_nonzero: int
    ste_ones: int
    ste_zeros: int
    ste_other: int  # gradients that are neither 0 nor 1 (none, if the estimator is what it claims)
    in_range: int  # weights whose rounded code lies inside the integer range


def ste_gradients(weight: torch.Tensor, layer: str, bits: int = 4, clip_quantile: float = 0.99) -> SteReport:
    """Backpropagate a gradient of ones through round(w / s) * s and through fake_quantize(w) on the grid
    that clips |w| at its `clip_quantile` (so some weights fall outside and are clipped)."""
    w = weight.detach().flatten().float()
    scheme = QScheme(bits, True, True)
    clip = float(torch.quantile(w.abs(), clip_quantile)) if w.numel() <= 16_000_000 else float(w.abs().max())
    scale = torch.tensor(max(clip, 1e-12) / scheme.qmax)
    x = w.clone().requires_grad_(True)
    (torch.round(x / scale) * scale).sum().backward()
    round_grad = x.grad.clone()
    x.grad = None
    fake_quantize(x, scale, torch.tensor(0), scheme.qmin, scheme.qmax).sum().backward()
    g = x.grad
    codes = torch.round(w * (1.0 / scale))
    inside = int(((codes >= scheme.qmin) & (codes <= scheme.qmax)).sum())
    ones, zeros = int((g == 1).sum()), int((g == 0).sum())
    return SteReport(layer, w.numel(), bits, round(clip, 6), clip_quantile, int((round_grad != 0).sum()), ones, zeros,
                     w.numel() - ones - zeros, inside)


def ste_verdict(r: SteReport) -> Verdict:
    """Claim: round() passes no gradient, so QAT needs the STE, which passes 1 in range and 0 outside.
    Rule: round()'s gradient is zero for every weight, and the STE's is 1 for exactly the in-range
    weights and 0 for the rest."""
    if r.round_nonzero:
        return Verdict(False, "round_has_gradient")
    ok = r.ste_ones == r.in_range and r.ste_zeros == r.weights - r.in_range and r.ste_other == 0
    return Verdict(ok, "holds" if ok else "ste_mask_differs")


@dataclass
class QatNeedReport(Report):
    """PTQ against a short QAT at the same config (from one QAT run's report)."""

    kind: ClassVar[str] = "learn_qat_need"
    model: str
    weight_bits: int
    granularity: str
    fp32_accuracy: float
    ptq_accuracy: float
    qat_accuracy: float
    steps: int
    train_images: int | None
    eval_images: int
    seconds: float


def qat_need(report: dict) -> QatNeedReport:
    """The numbers question b needs, from `QATReport.to_dict()`."""
    d = report["config"]["default"]
    return QatNeedReport(report["identity"]["model"], d["weight_bits"], d["weight_granularity"], report["fp32_accuracy"],
                         report["ptq_accuracy"], report["qat_accuracy"], report["steps"], report["recipe"]["train_size"],
                         report["eval_images"], report["seconds"])


def qat_need_verdict(r: QatNeedReport) -> Verdict:
    """Claim: when PTQ loses too much (low bit widths), QAT wins it back. Rule: QAT's top-1 is at least
    QAT_MARGIN above PTQ's; if PTQ is already within QAT_MARGIN of FP32, PTQ is enough here."""
    if r.qat_accuracy - r.ptq_accuracy >= QAT_MARGIN:
        return Verdict(True, "qat_recovers")
    if r.fp32_accuracy - r.ptq_accuracy < QAT_MARGIN:
        return Verdict(False, "ptq_enough")
    return Verdict(False, "qat_no_gain")


@dataclass
class QatDataReport(Report):
    """QAT on a fraction of the training set: accuracy after each short epoch (epoch 0 = PTQ)."""

    kind: ClassVar[str] = "learn_qat_data"
    model: str
    train_images: int
    train_fraction: float
    fp32_accuracy: float
    ptq_accuracy: float
    epochs: list[dict] = field(default_factory=list)  # {"epoch", "step", "accuracy"}
    eval_images: int = 0
    seconds: float = 0.0


def qat_data(report: dict, full_train_size: int) -> QatDataReport:
    """The numbers question c needs, from `QATReport.to_dict()` of a run on `train_size` images."""
    rows = [{"epoch": h["epoch"], "step": h["step"], "accuracy": h["fake_quant_accuracy"]} for h in report["history"]]
    train = report["recipe"]["train_size"] or full_train_size
    return QatDataReport(report["identity"]["model"], train, round(train / full_train_size, 4), report["history"][0]["fp32_accuracy"],
                         report["history"][0]["ptq_accuracy"], rows, report["monitor_images"], report["seconds"])


def qat_data_verdict(r: QatDataReport) -> Verdict:
    """Claim: QAT is a fine-tune; a fraction of the data recovers most of what PTQ lost. Rule: the first
    epoch on the fraction wins back at least RECOVERED_SHARE of the FP32 - PTQ gap (or ends within
    QAT_MARGIN of FP32). A gap under QAT_MARGIN leaves nothing to show."""
    gap = r.fp32_accuracy - r.ptq_accuracy
    if gap < QAT_MARGIN:
        return Verdict(None, "no_gap")
    first = next(e["accuracy"] for e in r.epochs if e["epoch"] == 1)
    ok = first - r.ptq_accuracy >= RECOVERED_SHARE * gap or first >= r.fp32_accuracy - QAT_MARGIN
    return Verdict(ok, "fraction_enough" if ok else "fraction_not_enough")
