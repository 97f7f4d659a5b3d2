"""`run_workflow`: PTQ baseline -> recovery (CLE, bias correction, AdaRound/GPTQ, SmoothQuant) -> sensitivity
and partial quantization -> QAT -> real INT8, stopping at the first step that meets the target (later steps are recorded as skipped, with the reason)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from qcore.quant.progress import Msg, Progress, silent, span
from qcore.quant.qconfig import QuantConfig
from qcore.workflow.final import deployed, from_qat
from qcore.workflow.report import StepOutcome, WorkflowReport
from qcore.workflow.recovery_step import recovery_step
from qcore.workflow.steps import timed_int8, no_int8_kernel, partial_step, ptq_step, qat_step
from qcore.workflow.target import Target
from qcore.zoo.models import LoadedModel

__all__ = ["WORKFLOW_METHODS", "WorkflowOptions", "run_workflow"]

# The seed's PTQ baseline: Max, Entropy, 99.99% and 99.999%.
WORKFLOW_METHODS = ("max", "entropy", "percentile:99.99", "percentile:99.999")


@dataclass(frozen=True)
class WorkflowOptions:
    """How far each step may go: whether step 2 may try recovery steps, the float layers step 3 may keep,
    whether QAT may run and on what share of the original training schedule (the seed's recipe: at most 10%)."""

    methods: tuple[str, ...] = WORKFLOW_METHODS
    max_float: int = 5
    allow_qat: bool = True
    qat_fraction: float = 0.10
    allow_recovery: bool = True

    def __post_init__(self):
        if not self.methods:
            raise ValueError("give at least one calibration method")
        if self.max_float < 1:
            raise ValueError("step 3 needs at least one layer it may keep in float")
        if not 0 < self.qat_fraction <= 0.10:
            raise ValueError("QAT may use at most 10% of the original training schedule")


def _skip(step: str, why: tuple[str, dict]) -> StepOutcome:
    return StepOutcome(step, False, skipped=why[0], detail=why[1])


def _after_ptq(ptq: StepOutcome) -> tuple[str, dict] | None:
    """Why the walk ends after step 1: the target is met, or a speed target is missed (recovery, float layers
    and QAT cannot make INT8 faster than all-INT8); None: go on."""
    if ptq.met:
        return "met", {"by": "ptq"}
    if ptq.verdict.speed_ok is False:
        return ("speed", {"speedup": ptq.speedup}) if ptq.speedup is not None else ("no_int8", {})
    return None


def _recover(p, ptq: StepOutcome, target: Target, opts: WorkflowOptions, threads: int, say: Progress):
    """Step 2, or why it did not run; returns the outcome, the state later steps start from, and why the
    walk ends here (None: go on)."""
    if not opts.allow_recovery:
        return _skip("recover", ("recovery_off", {})), p, None
    outcome, p = recovery_step(p, target, ptq, lambda q, config: timed_int8(q, config, threads), say)
    return outcome, p, (("met", {"by": "recover"}) if outcome.met else None)


def _later_steps(p, steps: list[StepOutcome], stop, target: Target, opts: WorkflowOptions, out_dir: Path,
                 threads: int, say: Progress):
    """Steps 3 and 4 (or why they did not run) and the final INT8 model; returns the final and its notes."""
    final_config, notes = p.base_config, []
    if stop is None:
        partial = partial_step(p, target, opts.max_float, threads, span(say, 0.0, 0.4))
        steps.append(partial)
        final_config = QuantConfig.from_dict(partial.config)
        stop = ("met", {"by": "partial"}) if partial.met else (None if opts.allow_qat else ("qat_off", {}))
    else:
        steps.append(_skip("partial", stop))
    untimed = no_int8_kernel(final_config)  # the reason no real INT8 model exists for it, or None
    if untimed:
        notes.append(untimed)
    if stop is None:
        steps.append(qat_step(p, final_config, target, opts.qat_fraction, out_dir / "qat", threads,
                              span(say, 0.4, 0.9)))
        return from_qat(steps[-1], p.fp32_accuracy, target), notes
    steps.append(_skip("qat", stop))
    source = next(s.step for s in reversed(steps) if s.ran)
    final = None if untimed else deployed(p, final_config, source, target, out_dir / "int8", threads,
                                          span(say, 0.4, 1.0))
    return final, notes


def run_workflow(model: str | LoadedModel, target: Target, config: QuantConfig | None = None,
                 options: WorkflowOptions | None = None, data: str | None = None, calib_size: int = 512,
                 eval_size: int | None = 1000, seed: int = 0, out_dir: str | Path = "out/workflow",
                 threads: int | None = None, progress: Progress | None = None) -> WorkflowReport:
    """Walk the four steps on `model` under `config` (bits and granularity: the user's starting point)."""
    say, opts = progress or silent, options or WorkflowOptions()
    threads = threads or torch.get_num_threads()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    inputs = {"model": model, "data": data, "calib_size": calib_size, "eval_size": eval_size, "seed": seed}
    ptq, p = ptq_step((config or QuantConfig()).resolved(), opts.methods, target, inputs, threads, span(say, 0, 0.15))
    steps, stop = [ptq], _after_ptq(ptq)
    if stop is None:
        recovered, p, stop = _recover(p, ptq, target, opts, threads, span(say, 0.15, 0.35))
        steps.append(recovered)
    else:
        steps.append(_skip("recover", stop))
    final, notes = _later_steps(p, steps, stop, target, opts, out_dir, threads, span(say, 0.35, 1.0))
    if final and final.verdict and not final.verdict.met and any(s.met for s in steps):
        notes.append("the final INT8 model misses the target its step met in simulation: see the final numbers")
    say(1.0, Msg("done"))
    return WorkflowReport(
        identity=p.inputs.run_identity(), inventory=p.sim.layer_inventory(), target=target.to_dict(), eval_size=p.inputs.eval_size,
        fp32_accuracy=p.fp32_accuracy, steps=steps, final=final, met_by=next((s.step for s in steps if s.met), None),
        threads=threads, notes=notes, out_dir=str(out_dir), seconds=round(time.perf_counter() - started, 1))
