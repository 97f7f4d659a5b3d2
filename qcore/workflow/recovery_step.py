"""Step 2 of the workflow: recover accuracy without float layers or training.

After the PTQ baseline misses the target, the recovery steps that fit the model are tried on the same
calibration and evaluation images, each measured end to end (qcore.analysis.recovery.measure_steps builds
its own sim from the shared model, so each try is what sensitivity, QAT and deploy would build):

- SmoothQuant for models with LayerNorm -> Linear (transformers), CLE for conv chains that share
  channels one to one (the first step of the chain: both reshape the weights and ranges the rest see);
- AdaRound and GPTQ, as alternatives, where some weights have at most 4 bits (at 8 bits rounding to
  nearest is already within a fraction of a step); if the target is still missed, BRECQ (block-wise
  reconstruction) in their place: slower, and on fm_mobilenetv2 W4 per-tensor the best (full test set,
  CLE + BRECQ 92.50% against CLE + AdaRound 92.28%), on fm_resnet not (93.18% against 93.25%), so it is
  measured, not assumed;
- bias correction (any model with weight layers), last: it measures the mean error against the FP32
  network (qcore.quant.recovery.reference) that the rounding of the steps before it leaves (measured on
  fm_mobilenetv2 W4 per-tensor, full test set: CLE + GPTQ 91.23%, + bias correction 92.42%).

The search is greedy: a step is kept only when it raises the measured accuracy over the best so far,
and the walk stops as soon as the target is met. The best combination found becomes the configuration
the later steps (float layers, QAT) and the final INT8 model start from; the report lists every try.
"""

from __future__ import annotations

import time
from dataclasses import replace

from qcore.analysis.recovery import measure_steps
from qcore.analysis.sensitivity import Prepared
from qcore.quant.progress import Msg, Progress, span
from qcore.quant.qconfig import QuantConfig, RecoveryStep
from qcore.quant.recovery.blocks import split_blocks
from qcore.quant.recovery.graph import layer_pairs, norm_linear_pairs
from qcore.workflow.report import RecoverDetail, StepOutcome, TriedSteps
from qcore.workflow.target import Target

__all__ = ["fitting_steps", "recovery_step"]

LOW_BITS = 4  # AdaRound, GPTQ and BRECQ are tried where some weight layer has at most this many bits
ROUNDINGS = ("adaround", "gptq", "brecq")  # each sets every weight's rounding: one of them at a time


def _has_blocks(p: Prepared) -> bool:
    try:
        return len(split_blocks(p.sim)) > 1
    except ValueError:  # a graph with several inputs or outputs
        return False


def fitting_steps(p: Prepared, config: QuantConfig) -> list[list[str]]:
    """The stages of the greedy search, in order; each stage holds alternatives (one is kept at most)."""
    first = []
    if norm_linear_pairs(p.sim):
        first.append("smoothquant")
    if layer_pairs(p.sim):
        first.append("cle")
    stages = [first] if first else []
    layers = [config.default] + [c for _, c in config.layers]
    if any(c.enabled and c.weight_dtype == "int" and c.weight_bits <= LOW_BITS for c in layers):
        stages.append(["adaround", "gptq"])
        if _has_blocks(p):
            stages.append(["brecq"])
    stages.append(["bias_correction"])
    return stages


def _label(steps: list[RecoveryStep]) -> list[str]:
    return [s.name for s in steps]


def _with_step(kept: list[RecoveryStep], name: str) -> list[RecoveryStep]:
    """The kept steps plus `name`; a weight rounding (BRECQ) takes the place of one kept before (AdaRound)."""
    base = [s for s in kept if s.name not in ROUNDINGS] if name in ROUNDINGS else kept
    return base + [RecoveryStep(name)]


def _search(p: Prepared, config: QuantConfig, target: Target, baseline: float, say: Progress):
    """Greedy over the stages; returns every try, the kept steps, their accuracy and their sim (None: nothing
    beat the baseline)."""
    stages = fitting_steps(p, config)
    total = sum(len(s) for s in stages)
    tried, kept, best, best_sim, done = [], [], baseline, None, 0
    for stage in stages:
        winner = None
        for name in stage:
            steps = _with_step(kept, name)
            say(done / total, Msg("Recover accuracy: trying {steps} ({i}/{n})", steps=" + ".join(_label(steps)),
                                  i=done + 1, n=total))
            row, sim = measure_steps(p.inputs, config, steps, p.fp32_preds, span(say, done / total, (done + 1) / total))
            done += 1
            tried.append(TriedSteps(_label(steps), row.accuracy, row.agreement, False, round(row.seconds, 1)))
            if row.accuracy > (winner[1] if winner else best):
                winner = (len(tried) - 1, row.accuracy, steps, sim)
        if winner is not None:
            index, best, kept, best_sim = winner
            tried[index] = replace(tried[index], kept=True)
        if target.judge(best, p.fp32_accuracy, None).accuracy_ok is not False:
            break
    return tried, kept, best, best_sim


def recovery_step(p: Prepared, target: Target, ptq: StepOutcome, timed, say: Progress) -> tuple[StepOutcome, Prepared]:
    """Try the fitting recovery steps on step 1's configuration; returns the outcome and the state the later
    steps start from (recalibrated with the kept steps, or `p` itself when none helped).
    `timed(p, config)` measures real INT8 latency (the workflow's own timing)."""
    start = time.perf_counter()
    config = p.base_config
    tried, kept, best, sim = _search(p, config, target, ptq.accuracy, span(say, 0.0, 0.9))
    if sim is not None:
        config = replace(config, recovery=tuple(kept))
        p = replace(p, sim=sim, ranges=sim.apply_ranges(), base_config=config)
        say(0.9, Msg("Recover accuracy: timing real INT8 with {steps}", steps=" + ".join(_label(kept))))
        timing = timed(p, config)
    else:
        timing = {"int8_ms": ptq.int8_ms, "fp32_ms": ptq.fp32_ms, "speedup": ptq.speedup}
    outcome = StepOutcome(
        "recover", True, accuracy=best, int8_ms=timing["int8_ms"], fp32_ms=timing["fp32_ms"],
        speedup=timing["speedup"], verdict=target.judge(best, p.fp32_accuracy, timing["speedup"]),
        config=config.to_dict(), detail=RecoverDetail(tried, _label(kept), ptq.accuracy),
        seconds=round(time.perf_counter() - start, 1))
    return outcome, p
