"""Topic 2: 4-bit formats (INT4 per-channel, per-group, NF4, ...): weight errors and accuracy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from qcore.analysis.evaluate import logits, scores, sqnr_db
from qcore.quant.lowbit import fake_quantize_lowbit
from qcore.quant.progress import Msg, Progress, silent
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.zoo.report import Report
from qcore.analysis.learn_topics.common import Verdict

__all__ = ["LOWBIT_VARIANTS", "LowBitReport", "lowbit_errors", "lowbit_accuracy", "lowbit_verdict"]


LOWBIT_VARIANTS = (("INT4 per-channel", "int4", None), ("INT4 per-group", "int4", 64), ("NF4", "nf4", 64),
                   ("FP4 E2M1", "fp4", 64))


@dataclass
class LowBitReport(Report):
    """Error of each 4-bit format on every weight of the model, and (when measured) the model's accuracy
    with all its weights in that format, activations in FP32."""

    kind: ClassVar[str] = "learn_lowbit"
    model: str
    block_size: int
    layers: int
    weights: int
    rows: list[dict]  # {"format", "sqnr_db" (all weights together), "median_layer_sqnr_db", "worst_layer"}
    fp32_accuracy: float | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    eval_images: int = 0


def _variant(w: torch.Tensor, fmt: str, block: int | None) -> torch.Tensor:
    return fake_quantize_lowbit(w, fmt, block)


def lowbit_errors(sim: QuantSim, block_size: int = 64, name: str = "") -> LowBitReport:
    """SQNR of each 4-bit variant on the real (BN-folded) weights: all weights pooled, and per layer."""
    weights = {n: wl.layer.weight.detach() for n, wl in sim.weight_layers.items()}
    rows = []
    for label, fmt, block in LOWBIT_VARIANTS:
        block = block_size if block else None
        signal = noise = 0.0
        per_layer = {}
        for n, w in weights.items():
            q = _variant(w, fmt, block)
            signal += float((w.double() ** 2).sum())
            noise += float(((w.double() - q.double()) ** 2).sum())
            per_layer[n] = sqnr_db(w, q)
        worst = min(per_layer, key=per_layer.get)
        rows.append({"format": label, "sqnr_db": round(10 * math.log10(signal / noise), 2) if noise else math.inf,
                     "median_layer_sqnr_db": round(float(torch.tensor(list(per_layer.values())).median()), 2),
                     "worst_layer": worst, "worst_layer_sqnr_db": round(per_layer[worst], 2)})
    return LowBitReport(name, block_size, len(weights), sum(w.numel() for w in weights.values()),
                        rows)


@torch.no_grad()
def lowbit_accuracy(module: nn.Module, xs: list[torch.Tensor], labels: torch.Tensor, block_size: int = 64,
                    progress: Progress | None = None) -> dict[str, float]:
    """Top-1 with every Conv2d/Linear weight (BN folded) in each 4-bit variant and activations in FP32;
    "FP32" is the same folded model unquantized."""
    say = progress or silent
    float_cfg = QuantConfig().with_default(weight_dtype="fp32", act_dtype="fp32")
    out = {"FP32": scores(logits(QuantSim(module, float_cfg), xs), labels).top1}
    for i, (label, fmt, block) in enumerate(LOWBIT_VARIANTS):
        say((i + 1) / (len(LOWBIT_VARIANTS) + 1), Msg("evaluating {path}", path=label))
        sim = QuantSim(module, float_cfg)
        for wl in sim.weight_layers.values():
            wl.layer.weight.copy_(_variant(wl.layer.weight, fmt, block_size if block else None))
        sim.weights_changed()
        out[label] = scores(logits(sim, xs), labels).top1
    return out


def lowbit_verdict(r: LowBitReport) -> Verdict:
    """Claim (QLoRA): for bell-shaped weights NF4 beats INT4 and FP4 at the same block size, and small
    blocks beat one scale per channel. Rule: NF4's pooled SQNR is the highest of the three block formats
    and INT4 per-group's is above INT4 per-channel's."""
    sq = {row["format"]: row["sqnr_db"] for row in r.rows}
    nf4_best = sq["NF4"] >= max(sq["INT4 per-group"], sq["FP4 E2M1"])
    groups_help = sq["INT4 per-group"] > sq["INT4 per-channel"]
    if nf4_best and groups_help:
        return Verdict(True, "nf4_best")
    return Verdict(False, "groups_no_help" if nf4_best else "nf4_not_best")
