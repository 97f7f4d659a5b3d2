"""A calibrated simulation: the one place that runs a config's accuracy-recovery steps before calibration.

Why a module of its own: recovery steps work on a QuantSim (quant.recovery imports quant.quantsim), and
building a calibrated sim runs them. When this lived on QuantSim (`QuantSim.calibrated`), quantsim and
recovery imported each other; now the direction is one way: quantsim <- recovery <- build.
"""

from __future__ import annotations

import torch
from torch import nn

from qcore.quant.progress import Progress, span
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.quant.recovery import apply_recovery

__all__ = ["calibrated_sim"]


def calibrated_sim(model: nn.Module, config: QuantConfig, batches: list[torch.Tensor],
                   progress: Progress | None = None) -> QuantSim:
    """A sim of `model` under `config`: its recovery steps applied (they change the sim's own copy of the
    weights), then calibrated on `batches` with each layer's method."""
    sim = QuantSim(model, config)
    if sim.config.recovery:
        sim.recovery_results = apply_recovery(sim, batches, span(progress, 0.0, 0.8) if progress else None)
        progress = span(progress, 0.8, 1.0) if progress else None
    sim.collect_stats(batches, progress)
    sim.apply_ranges()
    return sim
