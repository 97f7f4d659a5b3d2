"""The three steps of the guided workflow, each a function of the previous step's result.

1. `ptq_step`: one statistics pass, every calibration method evaluated on the same images; the best
   method (highest accuracy) is carried on, and its real INT8 model is timed against FP32.
2. `partial_step`: the two-sided sensitivity sweep under that method, then the greedy float
   fallback (qcore.analysis.partial.greedy_search) with each point's real INT8 latency: the first
   point that meets the target is the fewest float layers that do.
3. `qat_step`: quantization-aware fine-tuning of the partial step's configuration with the seed's recipe:
   at most `fraction` (10%) of the model's original training steps, at its batch size, the learning
   rate at 1% of the original, cosine-annealed (qcore.train.qat).

Accuracies are fake-quant on the workflow's evaluation images; latencies are batch-1 medians of the
real ONNX Runtime INT8 model interleaved with ONNX Runtime FP32 in this process.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from qcore.analysis.partial import greedy_search
from qcore.analysis.sensitivity import Prepared, evaluate_config, float_layers, prepare, sweep
from qcore.i18n import N_
from qcore.quant.progress import Msg, Progress, span
from qcore.quant.qconfig import QuantConfig
from qcore.runtime.partial import latency_probe, sim_latency
from qcore.train.qat import QATRecipe, run_qat
from qcore.workflow.report import (CurvePoint, LayerRank, MethodScore, PartialDetail, PtqDetail, QatDetail,
                                   StepOutcome)
from qcore.workflow.target import Target

__all__ = ["no_int8_kernel", "timed_int8", "ptq_step", "partial_step", "qat_step", "qat_recipe"]


def no_int8_kernel(config: QuantConfig) -> str | None:
    """Why `config` has no real INT8 model to time (activations other than 8-bit integers), or None."""
    layers = [config.default] + [c for _, c in config.layers]
    odd = sorted({c.act_bits for c in layers if c.quantizes_act and c.act_dtype == "int" and c.act_bits != 8})
    if odd:
        return f"{'/'.join(map(str, odd))}-bit activations have no INT8 kernel: latency is not measured"
    return None


def _untimed_probe(prepared, out_dir):
    """A latency probe for configs with no INT8 kernel: every point's latency is unknown (None)."""
    def measure(config):
        measure.fp32_ms.append(None)
        return None

    measure.fp32_ms = []
    return measure


def timed_int8(p: Prepared, config: QuantConfig, threads: int) -> dict:
    """Batch-1 latency of `config` as real INT8 (the shared sim, set to it) vs FP32, both in ONNX Runtime;
    None for each where no INT8 kernel runs the config."""
    if no_int8_kernel(config):
        return {"int8_ms": None, "fp32_ms": None, "speedup": None}
    p.sim.configure(config)
    p.sim.apply_ranges(ranges=p.ranges)
    with tempfile.TemporaryDirectory() as tmp:
        return sim_latency(p.sim, p.loaded.module, p.loaded.spec.input_shape, tmp, threads)


def ptq_step(base: QuantConfig, methods, target: Target, inputs: dict, threads: int,
             say: Progress) -> tuple[StepOutcome, Prepared]:
    """Every method on one statistics pass; returns the outcome and the state calibrated with the best."""
    start = time.perf_counter()
    say(0.0, Msg("PTQ baseline: one statistics pass over the calibration images"))
    p = prepare(inputs["model"], base, data=inputs["data"], calib_size=inputs["calib_size"],
                eval_size=inputs["eval_size"], seed=inputs["seed"])
    rows = []
    for i, method in enumerate(methods):
        say(0.2 + 0.6 * i / len(methods),
            Msg("PTQ baseline: {method} ({i}/{n})", method=method, i=i + 1, n=len(methods)))
        config = p.base_config.with_default(act_method=method)
        p.sim.configure(config)
        scored = evaluate_config(replace(p, ranges=p.sim.apply_ranges()), config)
        rows.append(MethodScore(method, scored["accuracy"], scored["agreement"]))
    best = max(rows, key=lambda r: r.accuracy)
    config = p.base_config.with_default(act_method=best.method)
    p.sim.configure(config)
    p = replace(p, ranges=p.sim.apply_ranges(), base_config=config)
    say(0.85, Msg("PTQ baseline: timing real INT8 with {method}", method=best.method))
    timed = timed_int8(p, config, threads)
    outcome = StepOutcome(
        "ptq", True, accuracy=best.accuracy, int8_ms=timed["int8_ms"], fp32_ms=timed["fp32_ms"],
        speedup=timed["speedup"], verdict=target.judge(best.accuracy, p.fp32_accuracy, timed["speedup"]),
        config=config.to_dict(), detail=PtqDetail(rows, best.method),
        seconds=round(time.perf_counter() - start, 1))
    return outcome, p


def partial_step(p: Prepared, target: Target, max_float: int, threads: int, say: Progress) -> StepOutcome:
    """Sensitivity sweep, then float layers one by one (most sensitive first) until the target is met."""
    start = time.perf_counter()
    say(0.0, Msg("Sensitivity: quantizing each layer alone, and all but each layer"))
    report = sweep(p, progress=span(say, 0.0, 0.6))
    budget = target.max_drop if target.max_drop is not None else 0.0
    probe = _untimed_probe if no_int8_kernel(p.base_config) else (
        lambda prepared, out_dir: latency_probe(prepared, out_dir, threads))
    greedy = greedy_search(p, report, budget, max_float, probe, progress=span(say, 0.6, 1.0))
    curve = []
    for c in greedy.curve:
        speedup = c.fp32_ms / c.latency_ms if c.latency_ms else None
        curve.append(CurvePoint(list(c.float_layers), c.accuracy, c.latency_ms, c.fp32_ms, speedup, c.weight_bytes,
                                target.judge(c.accuracy, p.fp32_accuracy, speedup)))
    chosen = next((c for c in curve if c.verdict.met), None) or _carried(curve)
    config = float_layers(p.base_config, chosen.float_layers)
    ranking = [LayerRank(r.name, r.only_this_quantized, r.all_but_this, r.sqnr_db)
               for r in sorted(report.layers, key=lambda r: -(r.all_but_this - report.base_accuracy))]
    return StepOutcome(
        "partial", True, accuracy=chosen.accuracy, int8_ms=chosen.int8_ms, fp32_ms=chosen.fp32_ms,
        speedup=chosen.speedup, verdict=chosen.verdict, config=config.to_dict(),
        float_layers=list(chosen.float_layers), detail=PartialDetail(curve, ranking, max_float),
        seconds=round(time.perf_counter() - start, 1))


def _carried(curve: list[CurvePoint]) -> CurvePoint:
    """When no point meets the target, what QAT starts from: the most accurate point whose speed still
    meets a speed target (the speed target can only get worse with more float layers), else the most
    accurate point."""
    fast = [c for c in curve if c.verdict.speed_ok is not False] or curve[:1]
    return max(fast, key=lambda c: c.accuracy)


def qat_recipe(info: dict, train_images: int, fraction: float) -> tuple[QATRecipe, tuple[str, dict]]:
    """The seed's recipe: `fraction` of the original schedule's steps at its batch size, LR 1% of the
    original (qcore.train.qat.default_lr), cosine-annealed; and where it came from (a message and its fields).
    A model whose checkpoint records no schedule gets `fraction` of one epoch over `train_images`."""
    if not 0 < fraction <= 0.10:
        raise ValueError("QAT may use at most 10% of the original training schedule (fraction 0 < f <= 0.1)")
    batch = int(info.get("batch") or 64)
    if info.get("steps"):
        steps = max(1, round(fraction * int(info["steps"])))
        why = (N_("{share:.0%} of the original {steps} steps ({epochs} epochs) at batch {batch}"),
               {"share": fraction, "steps": int(info["steps"]), "epochs": info.get("epochs", "?"), "batch": batch})
    else:
        steps = max(1, round(fraction * train_images / batch))
        why = (N_("the original schedule is not recorded: {share:.0%} of one epoch over {images} images"),
               {"share": fraction, "images": train_images})
    return QATRecipe(steps=steps, minutes=None, epochs=min(3, steps), batch_size=batch), why


def qat_step(p: Prepared, config: QuantConfig, target: Target, fraction: float, out_dir: Path, threads: int,
             say: Progress) -> StepOutcome:
    """Fine-tune `config` (the partial step's float layers kept) with the seed's recipe; real INT8 of the result."""
    from qcore.zoo.data import load_dataset
    from qcore.zoo.inputs import decode_for

    start = time.perf_counter()
    inp = p.inputs
    train_images = len(load_dataset(inp.data, "train", decode_for(inp.loaded)).labels)
    recipe, why = qat_recipe(inp.loaded.info, train_images, fraction)
    result = run_qat(inp.loaded, config, recipe, data=inp.data, calib_size=inp.calib_size, eval_size=inp.eval_size,
                     final_eval_size=inp.eval_size, seed=inp.seed, out_dir=out_dir, threads=threads, progress=say)
    r = result.report
    lat = r.latency_ms
    speedup = lat["fp32_ort"] / lat["qat_int8"] if lat.get("qat_int8") else None
    return StepOutcome(
        "qat", True, accuracy=r.qat_accuracy, int8_ms=lat.get("qat_int8"), fp32_ms=lat.get("fp32_ort"),
        speedup=speedup, verdict=target.judge(r.qat_accuracy, r.fp32_accuracy, speedup),
        config=config.to_dict(), float_layers=[n for n, c in config.layers if not c.enabled],
        detail=QatDetail(r.recipe, why[0], why[1], r.ptq_accuracy, r.int8_accuracy, r.ptq_int8_accuracy, r.history,
                         [str(Path(r.out_dir) / f) for f in r.files], r.notes),
        seconds=round(time.perf_counter() - start, 1))
