"""Topic 4: FP16 overflow against BF16."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from qcore.analysis.evaluate import sqnr_db
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.zoo.report import Report
from qcore.analysis.learn_topics.common import FP16_MAX, Verdict

__all__ = ["Fp16Report", "fp16_overflow", "fp16_verdict"]


@dataclass
class Fp16Report(Report):
    """Where FP16's range ends on this model: its largest activation, the input scale that overflows FP16,
    whether BF16 survives that scale, and each format's error on the real activations."""

    kind: ClassVar[str] = "learn_fp16"
    model: str
    max_abs_activation: float
    max_layer: str
    headroom: float  # FP16_MAX / max_abs_activation
    sweep: list[dict]  # {"scale", "fp16_finite", "bf16_finite", "first_inf_layer"}
    overflow_scale: float | None
    bf16_finite_at_overflow: bool | None
    sqnr_db: dict[str, float]  # median over layers, on the real activations at scale 1


def _format_sim(module: nn.Module, fmt: str, x: torch.Tensor) -> QuantSim:
    sim = QuantSim(module, QuantConfig().with_default(weight_dtype=fmt, act_dtype=fmt))
    sim.collect_stats([x[:1]])
    sim.apply_ranges()
    return sim


@torch.no_grad()
def _first_inf(sim: QuantSim, x: torch.Tensor) -> str | None:
    """The first quantization point whose FP16/BF16 output is not finite, or None."""
    with sim.capture() as records:
        sim(x)
    return next((name for name, _, out in records if not torch.isfinite(out).all()), None)


@torch.no_grad()
def _activation_sqnr(module: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Median over layers of the SQNR of each activation cast to FP16 and to BF16 (cast alone, per layer)."""
    from qcore.quant.fakequant import fake_cast

    sim = QuantSim(module)
    with sim.disabled(), sim.capture() as records:
        sim(x)
    return {fmt.upper(): round(float(torch.tensor([sqnr_db(o, fake_cast(o, fmt)) for _, _, o in records
                                                    if o.abs().sum() > 0]).median()), 1) for fmt in ("fp16", "bf16")}


def fp16_overflow(module: nn.Module, stats: dict, x: torch.Tensor, max_power: int = 30, name: str = "") -> Fp16Report:
    """Multiply the input by 2^k, k = 0, 1, ..., until some FP16 activation is inf (every weight and
    activation cast as the simulation does); BF16 is run at that scale too. `stats` are the page's
    statistics (float activations at scale 1), whose largest |value| predicts the overflow."""
    layer = max(stats, key=lambda n: max(abs(stats[n].min), abs(stats[n].max)))
    biggest = max(abs(stats[layer].min), abs(stats[layer].max))
    fp16, bf16 = _format_sim(module, "fp16", x), _format_sim(module, "bf16", x)
    sweep, overflow, bf16_ok = [], None, None
    start = max(1, int(math.log2(max(1.0, FP16_MAX / max(biggest, 1e-30)))) - 2)  # skip scales far below the prediction
    for k in [0, *range(start, max_power + 1)]:
        inf16 = _first_inf(fp16, x * 2.0 ** k)
        row = {"scale": 2.0 ** k, "fp16_finite": inf16 is None, "bf16_finite": None, "first_inf_layer": inf16}
        if inf16 is not None or k == 0:
            row["bf16_finite"] = _first_inf(bf16, x * 2.0 ** k) is None
        sweep.append(row)
        if inf16 is not None:
            overflow, bf16_ok = 2.0 ** k, row["bf16_finite"]
            break
    return Fp16Report(name, round(biggest, 4), layer, round(FP16_MAX / max(biggest, 1e-30), 1),
                      sweep, overflow, bf16_ok, _activation_sqnr(module, x))


def fp16_verdict(r: Fp16Report) -> Verdict:
    """Claim: FP16 tops out at 65504, BF16 has FP32's range. Rule: some input scale in the sweep makes an
    FP16 activation inf while BF16 stays finite at that same scale."""
    if r.overflow_scale is None:
        return Verdict(False, "no_overflow_in_sweep")
    return Verdict(True, "holds") if r.bf16_finite_at_overflow else Verdict(False, "bf16_overflowed")
