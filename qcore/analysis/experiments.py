"""Whole experiments built from the engine's parts, shared by the CLI, the app and the benchmarks.

`compare_methods` is the calibration experiment: one statistics pass, then every range method
applied to those same statistics and evaluated end to end against FP32.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from qcore.analysis.evaluate import (EvalResult, kl_divergence, layer_errors, logits, scores, single_threaded,
                                     sqnr_db)
from qcore.analysis.reports import (CalibrationReport, CalibrationStudy, ClippingReport, ClippingRow, MethodResult,
                                    StudyRow)
from qcore.quant.calibration import DEFAULT_METHODS, RangeResult, parse_method
from qcore.quant.progress import Msg, Progress, silent, span
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.quant.work import Executor, LocalExecutor
from qcore.zoo.inputs import Inputs, load, prepare_inputs
from qcore.zoo.models import LoadedModel, finish_loading

__all__ = ["parse_methods", "refusal_note", "timed_pass", "compare_methods", "calibration_study", "GridWork", "grid_item",
           "weight_ranges", "channel_ranges", "clip_activations", "clipping_experiment"]


def parse_methods(text: str) -> list[str]:
    """'max,percentile:99.99,entropy' -> validated method list (duplicates dropped, order kept)."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise ValueError("give at least one calibration method")
    for m in methods:
        parse_method(m)
    return list(dict.fromkeys(methods))


@torch.no_grad()
def timed_pass(fn: Callable[[torch.Tensor], object], xs: list[torch.Tensor]) -> float:
    """Seconds to run `fn` over pre-built batches (preprocessing excluded)."""
    start = time.perf_counter()
    for x in xs:
        fn(x)
    return time.perf_counter() - start


def refusal_note(applied: dict[str, RangeResult]) -> tuple[str, str]:
    """(the method the ranges came from, why it is not the one asked for) over a sim's applied ranges:
    a refused method gives every layer the same fallback and reason."""
    noted = next((r for r in applied.values() if r.note), None)
    return (noted.method, noted.note) if noted else ("", "")


def _method_result(sim: QuantSim, method: str, inp: Inputs, fp32: EvalResult, fp32_logits: torch.Tensor) -> MethodResult:
    start = time.perf_counter()
    used, note = refusal_note(sim.apply_ranges(method=method))
    out = logits(sim, inp.eval_batches)
    result = scores(out, inp.labels)
    return MethodResult(method, result.top1, result.top5, result.agreement_with(fp32),
                        round(time.perf_counter() - start, 3), round(sqnr_db(fp32_logits, out), 2),
                        kl_divergence(fp32_logits, out), used or method, note)


def compare_methods(
    model: str | LoadedModel,
    data: str | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    bits: int = 8,
    weight_bits: int = 8,
    granularity: str = "channel",
    calib_size: int = 512,
    eval_size: int | None = None,
    seed: int = 0,
    weights: str | None = None,
    config: QuantConfig | None = None,
    progress: Progress | None = None,
) -> CalibrationReport:
    """Accuracy and FP32 agreement of every calibration method, from one statistics pass."""
    say = progress or silent
    inp = prepare_inputs(model, data, calib_size, eval_size, seed, weights)
    if config is None:
        config = QuantConfig().with_default(act_bits=bits, weight_bits=weight_bits, weight_granularity=granularity)
    say(0.0, Msg("FP32 evaluation on {n} images", n=inp.eval_size))
    fp32_logits = logits(inp.loaded.module, inp.eval_batches)
    fp32 = scores(fp32_logits, inp.labels)
    sim = QuantSim(inp.loaded.module, config)
    say(0.1, Msg("statistics pass over {n} calibration images", n=inp.calib_size))
    fp32_seconds = timed_pass(inp.loaded.module, inp.calib_batches)
    start = time.perf_counter()
    sim.collect_stats(inp.calib_batches, progress=span(say, 0.1, 0.2))
    stats_seconds = time.perf_counter() - start
    rows = []
    for i, m in enumerate(methods):
        say(0.2 + 0.8 * i / len(methods), Msg("evaluating {path}", path=m))
        rows.append(_method_result(sim, m, inp, fp32, fp32_logits))
    d = config.default
    return CalibrationReport(
        identity=inp.run_identity(), inventory=sim.layer_inventory(), eval_size=inp.eval_size, act_bits=d.act_bits, weight_bits=d.weight_bits,
        granularity=d.weight_granularity, fp32_accuracy=fp32.top1, fp32_top5=fp32.top5, methods=rows,
        stats_pass_seconds=round(stats_seconds, 4), fp32_pass_seconds=round(fp32_seconds, 4),
        quantizers=len(sim.points), unsupported_layers=sim.unsupported, config=sim.config.to_dict())


MAX_WEIGHT_SAMPLE = 100_000
CLIPPABLE = (torch.nn.GELU, torch.nn.SiLU, torch.nn.Hardswish, torch.nn.Mish)


def clip_activations(loaded: LoadedModel, bound: float) -> LoadedModel:
    """A copy whose GELU/SiLU outputs are clamped to [-bound, bound] (GELU10 when bound = 10).

    Bounding an unbounded activation caps the outliers that stretch its quantization range; the
    quantizer then sits after the clamp, so calibration sees the bounded range.
    """
    if bound <= 0:
        raise ValueError("the clipping bound must be positive")
    module = copy.deepcopy(loaded.module)
    targets = [name for name, m in module.named_modules() if isinstance(m, CLIPPABLE)]
    if not targets:
        raise ValueError(f"{loaded.name} has no GELU/SiLU/Hardswish/Mish activations to clip")
    for name in targets:
        parent, _, attr = name.rpartition(".")
        owner = module.get_submodule(parent) if parent else module
        setattr(owner, attr, torch.nn.Sequential(getattr(owner, attr), torch.nn.Hardtanh(-bound, bound)))
    spec = replace(loaded.spec, name=f"{loaded.name}+clip{bound:g}", build=lambda: module)
    return finish_loading(spec, module, {**loaded.info, "clipped_activations": len(targets), "bound": bound})


def clipping_experiment(
    model: str | LoadedModel,
    bound: float = 10.0,
    methods: Sequence[str] = ("max", "percentile:99.99"),
    act_bits: int = 8,
    calib_size: int = 512,
    eval_size: int | None = 2000,
    seed: int = 0,
    data: str | None = None,
    progress: Progress | None = None,
    weight_range: str = "auto",
) -> ClippingReport:
    """The GELU10 experiment: accuracy per method with and without clipped activations."""
    say = progress or silent
    loaded = load(model)
    clipped = clip_activations(loaded, bound)
    rows = []
    for i, (label, m) in enumerate((("original", loaded), (f"clipped to ±{bound:g}", clipped))):
        say(i / 2, Msg("{model}: statistics pass and {n} methods", model=label, n=len(methods)))
        rep = compare_methods(m, data=data, methods=list(methods), calib_size=calib_size, eval_size=eval_size,
                              seed=seed, config=QuantConfig(weight_range=weight_range).with_default(act_bits=act_bits))
        rows += [ClippingRow(label, row.method, row.accuracy, rep.fp32_accuracy) for row in rep.methods]
    say(1.0, Msg("done"))
    return ClippingReport(loaded.name, bound, act_bits, rows, clipped.info["clipped_activations"])


def weight_ranges(sim: QuantSim) -> dict[str, dict]:
    """Per-output-channel min/max of every (BN-folded) Conv2d/Linear weight, as deployed."""
    out = channel_ranges(sim)
    for name, wl in sim.weight_layers.items():
        values = wl.layer.weight.detach().flatten()
        if values.numel() > MAX_WEIGHT_SAMPLE:  # a fixed random sample is plenty for a distribution plot
            values = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[:MAX_WEIGHT_SAMPLE]]
        out[name]["values"] = values.tolist()
    return out


def channel_ranges(sim: QuantSim) -> dict[str, dict]:
    """Per-output-channel min/max of every (BN-folded) Conv2d/Linear weight."""
    out = {}
    for name, wl in sim.weight_layers.items():
        flat = wl.layer.weight.detach().reshape(wl.layer.weight.shape[0], -1)
        out[name] = {"min": flat.min(1).values.tolist(), "max": flat.max(1).values.tolist()}
    return out


@dataclass
class GridWork:
    """What every (method, bits) item of the calibration grid reads: the sim with its statistics, the
    config, the evaluation batches and labels, FP32's scores, the probe batch and the first bit width."""

    sim: QuantSim
    config: QuantConfig
    xs: list[torch.Tensor]
    labels: torch.Tensor
    fp32: EvalResult
    probe: torch.Tensor
    first_bits: int


def grid_item(w: GridWork, item: tuple[str, int]) -> tuple[StudyRow, dict | None, dict | None]:
    """One method at one activation bit width: accuracy and FP32 agreement; at the first width also the
    ranges it picks per layer and each layer's SQNR. Deterministic, so any executor gives the same row."""
    method, bits = item
    w.sim.configure(w.config.with_default(act_bits=bits))
    applied = w.sim.apply_ranges(method=method)
    result = scores(logits(w.sim, w.xs), w.labels)
    row = StudyRow(method, bits, result.top1, result.agreement_with(w.fp32), refusal_note(applied)[1])
    if bits != w.first_bits:
        return row, None, None
    sqnr = {name: e["sqnr_db"] for name, e in single_threaded(layer_errors, w.sim, w.probe).items()}
    return row, {name: r.to_dict() for name, r in applied.items()}, sqnr


def _study_rows(sim: QuantSim, config: QuantConfig, inp: Inputs, fp32: EvalResult, methods, act_bits, say,
                executor: Executor):
    """Accuracy per method and bit width; ranges and per-layer SQNR per method at the first bit width:
    one work item per (method, bits), run by `executor`."""
    runs = [(m, b) for b in act_bits for m in methods]
    work = GridWork(sim, config, inp.eval_batches, inp.labels, fp32, inp.calib_batches[0][:64], act_bits[0])
    results = executor.map(grid_item, work, runs, span(say, 0.25, 1.0), what=Msg("method x bits evaluations"))
    rows, ranges, sqnr = [], {}, {}
    for (method, _), (row, picked, errors) in zip(runs, results):
        rows.append(row)
        if picked is not None:
            ranges[method], sqnr[method] = picked, errors
    return rows, ranges, sqnr


def calibration_study(
    model: str | LoadedModel,
    data: str | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    act_bits: tuple[int, ...] = (8, 6, 4),
    weight_bits: int = 8,
    granularity: str = "channel",
    symmetric: bool = False,
    calib_size: int = 512,
    eval_size: int | None = 2000,
    seed: int = 0,
    progress: Progress | None = None,
    weight_range: str = "auto",
    executor: Executor | None = None,
) -> tuple[CalibrationStudy, QuantSim]:
    """Everything the calibration page shows, from ONE statistics pass.

    Returns the report and the QuantSim whose `.stats` hold every histogram (set to the first method
    and bit width); the report has the ranges every method picks per layer, accuracy and FP32
    agreement per method and activation bit width, and per-layer SQNR per method at the first width.
    The (method, bits) evaluations are work items for `executor` (None: this process).
    """
    say = progress or silent
    inp = prepare_inputs(model, data, calib_size, eval_size, seed)
    config = QuantConfig(weight_range=weight_range).with_default(
        act_bits=act_bits[0], weight_bits=weight_bits, weight_granularity=granularity, act_symmetric=symmetric)
    sim = QuantSim(inp.loaded.module, config)
    n = inp.calib_size
    say(0.0, Msg("statistics pass over {n} images", n=n))
    start = time.perf_counter()
    sim.collect_stats(inp.calib_batches, progress=span(say, 0.0, 0.2))
    stats_seconds = time.perf_counter() - start
    say(0.2, Msg("FP32 evaluation"))
    fp32 = scores(logits(inp.loaded.module, inp.eval_batches), inp.labels)
    rows, ranges, sqnr = _study_rows(sim, config, inp, fp32, methods, act_bits, say, executor or LocalExecutor())
    sim.configure(config)
    sim.apply_ranges(method=methods[0])
    say(1.0, Msg("done"))
    report = CalibrationStudy(
        identity=inp.run_identity(), inventory=sim.layer_inventory(), eval_size=inp.eval_size, fp32_accuracy=fp32.top1, methods=list(methods),
        act_bits=list(act_bits), weight_bits=weight_bits, granularity=granularity, symmetric=symmetric,
        weight_range=sim.config.weight_range, accuracy=rows, ranges=ranges, layer_sqnr_db=sqnr,
        points=[{"name": p.name, "kind": p.kind, "type": p.module_type} for p in sim.points],
        weights=weight_ranges(sim), stats_pass_seconds=round(stats_seconds, 3), unsupported_layers=sim.unsupported)
    return report, sim
