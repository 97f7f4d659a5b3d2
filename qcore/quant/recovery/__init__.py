"""Accuracy-recovery steps, applied to a QuantSim's own (folded) copy of the model before calibration.

A config's `recovery` lists the steps in order; `qcore.quant.build.calibrated_sim` runs them, so every path that
builds its sim with it (recover, sensitivity, QAT, deploy) carries them, and the INT8 exporters read
the equalized, rounded and corrected weights from the sim. (The calibration comparison and study
build plain sims: they compare range methods, not recovery steps.) Steps never touch the caller's model:
the sim deep-copied it. Each returns what it changed and how long it took (`StepResult`).

- `cle`: cross-layer equalization + high-bias absorption (cle.py)
- `bias_correction`: empirical, on calibration data (bias.py)
- `adaround`, `gptq`: output-aware weight rounding (rounding.py)
- `brecq`: the rounding of each block's layers (and its activation step sizes) fitted at once to the block's output (reconstruct.py)
- `smoothquant`: activation outliers into the weights, LayerNorm -> Linear (bias.py)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from qcore.quant.progress import Progress, silent, span
from qcore.quant.qconfig import RecoveryStep
from qcore.quant.quantsim import QuantSim
from qcore.quant.recovery.bias import correct_bias, smooth
from qcore.quant.recovery.cle import absorb_high_bias, choose_rounds, equalize
from qcore.quant.recovery.reconstruct import reconstruct_blocks
from qcore.quant.recovery.rounding import adaround, gptq

__all__ = ["StepResult", "apply_recovery", "NEEDS_RANGES"]

NEEDS_RANGES = {"bias_correction", "adaround", "gptq", "brecq"}  # they see the quantized sim's activations


@dataclass
class StepResult:
    name: str
    seconds: float
    changes: dict


def _run(step: RecoveryStep, sim: QuantSim, batches: list[torch.Tensor], say: Progress) -> dict:
    if step.name == "cle":
        rounds, high_bias, scores = step.param("rounds", 0), bool(step.param("high_bias", 1.0)), {}
        if rounds == 0:  # chosen on the calibration images
            rounds, scores = choose_rounds(sim, batches, high_bias)
        out = equalize(sim, rounds)
        out["rounds_logit_sqnr_db"] = scores
        if high_bias:
            out.update(absorb_high_bias(sim))
        return out
    if step.name == "smoothquant":
        return smooth(sim, batches, step.param("alpha", 0.5))
    if step.name == "bias_correction":
        return correct_bias(sim, batches, say)
    if step.name == "adaround":
        return adaround(sim, batches, step.param("iters", 500), step.param("reg", 0.01), seed=step.param("seed", 0),
                        progress=say)
    if step.name == "brecq":
        return reconstruct_blocks(sim, batches, step.param("iters", 500), step.param("reg", 0.01),
                                  step.param("drop", 0.0), step.param("lr", 0.01),
                                  seed=step.param("seed", 0), act_lr=step.param("act_lr", 0.0), progress=say)
    return gptq(sim, batches, step.param("damp", 0.01), progress=say)


def apply_recovery(sim: QuantSim, batches: list[torch.Tensor], progress: Progress | None = None) -> list[StepResult]:
    """Run `sim.config.recovery` in order on the sim; ranges are (re)computed where a step needs them."""
    say, steps, results = progress or silent, sim.config.recovery, []
    for i, step in enumerate(steps):
        part = span(say, i / len(steps), (i + 1) / len(steps))
        if step.name in NEEDS_RANGES:
            sim.collect_stats(batches)
            sim.apply_ranges()
        start = time.perf_counter()
        changes = _run(step, sim, batches, part)
        sim.weights_changed()
        results.append(StepResult(step.name, round(time.perf_counter() - start, 3), changes))
    return results
