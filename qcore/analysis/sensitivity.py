"""Per-layer sensitivity, greedy float fallback, and the accuracy vs measured-latency trade-off.

Two-sided protocol (as AIMET's quant analyzer): for every layer i,
- `only_this_quantized`: accuracy with layer i alone quantized (how much error i injects);
- `all_but_this`: accuracy with every layer quantized except i (how much keeping i in float saves);
plus the SQNR/MSE/cosine of layer i's own output when it alone is quantized.

One statistics pass serves the whole sweep: ranges are computed once and reused by every
evaluation. Each evaluation is an independent job (a config in, metrics out: `evaluate_config`),
so a sweep can be spread over processes or machines later. Inputs are preprocessed once.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch
from torch import fx

from qcore.analysis.evaluate import logits, output_errors, single_threaded
from qcore.analysis.reports import CurvePoint, GreedyResult, LayerSensitivity, SensitivityReport
from qcore.quant.calibration import RangeResult
from qcore.quant.progress import Msg, Progress, silent, span
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.quant.build import calibrated_sim
from qcore.quant.work import Executor, LocalExecutor
from qcore.zoo.inputs import Inputs, prepare_inputs
from qcore.zoo.models import LoadedModel

__all__ = ["Prepared", "SweepWork", "sweep_item", "prepare", "evaluate_config", "sweep", "greedy_fallback", "swept_layers", "only_layers", "float_layers",
           "weight_bytes"]


@dataclass
class Prepared:
    """Everything evaluations share: the inputs, the calibrated sim, its ranges and the FP32 predictions."""

    inputs: Inputs
    sim: QuantSim
    ranges: dict[str, RangeResult]
    fp32_preds: torch.Tensor
    fp32_accuracy: float
    base_config: QuantConfig
    # one evaluation at a time on the shared sim: the page's re-measure and greedy jobs may overlap
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def loaded(self) -> LoadedModel:
        return self.inputs.loaded

    @property
    def xs(self) -> list[torch.Tensor]:
        return self.inputs.eval_batches

    @property
    def labels(self) -> torch.Tensor:
        return self.inputs.labels


def only_layers(config: QuantConfig, names: list[str], layers: list[str]) -> QuantConfig:
    """`config` with every layer disabled except `names`."""
    out = config
    for name in layers:
        out = out.with_layer(name, enabled=name in names)
    return out


def float_layers(config: QuantConfig, names: list[str]) -> QuantConfig:
    """`config` with `names` kept in float."""
    for name in names:
        config = config.with_layer(name, enabled=False)
    return config


def _predict(model, xs: list[torch.Tensor]) -> torch.Tensor:
    return logits(model, xs).argmax(1)


def prepare(
    model: str | LoadedModel,
    config: QuantConfig | None = None,
    data: str | None = None,
    calib_size: int = 512,
    eval_size: int | None = 1000,
    seed: int = 0,
) -> Prepared:
    """Load, run the one statistics pass, compute every layer's range, and run FP32 once."""
    config = (config or QuantConfig()).resolved()
    inp = prepare_inputs(model, data, calib_size, eval_size, seed)
    sim = calibrated_sim(inp.loaded.module, config, inp.calib_batches)
    inp = replace(inp, eval_batches=inp.eval_batches.rebatched(sweep_batch(sim, inp.eval_batches.head(1))))
    fp32_preds = _predict(inp.loaded.module, inp.eval_batches)
    acc = int((fp32_preds == inp.labels).sum()) / len(inp.labels)
    return Prepared(inp, sim, sim.apply_ranges(), fp32_preds, acc, config)


def evaluate_config(p: Prepared, config: QuantConfig) -> dict:
    """One independent evaluation: accuracy and FP32 agreement of `config` with the shared ranges."""
    p.sim.configure(config)
    p.sim.apply_ranges(ranges=p.ranges)
    preds = _predict(p.sim, p.xs)
    n = len(p.labels)
    return {"accuracy": int((preds == p.labels).sum()) / n, "agreement": int((preds == p.fp32_preds).sum()) / n}


def _layer_starts(sim: QuantSim) -> dict[str, int]:
    """For each layer, the index of its first graph node (its conv/linear, add or activation);
    everything before that node is the same as in the reference run the sweep reuses."""
    nodes = list(sim.model.graph.nodes)
    starts = {}
    for point in sim.points:
        for i, node in enumerate(nodes):
            if (node.op == "call_module" and node.target == point.name) or (
                node.op == "call_function" and node.name == point.name
            ):
                starts[point.name] = i
                break
        else:
            starts[point.name] = 0  # the input, or a name we cannot place: run from the start
    return starts


PREFIX_BUDGET_BYTES = int(float(os.environ.get("QX_PREFIX_BUDGET_MB", "768")) * 2**20)
MAX_SWEEP_BATCH = 500


def sweep_batch(sim: QuantSim, one: torch.Tensor) -> int:
    """Images per sweep item: as many as keep one item's prefix cache (every graph value of its batch, kept)
    within PREFIX_BUDGET_BYTES, measured on one image. 500 for a 28x28 model; a few for an ImageNet one,
    whose kept values are tens of megabytes per image."""
    per_image = max(1, _PrefixCache(sim, one).nbytes())
    return max(1, min(MAX_SWEEP_BATCH, PREFIX_BUDGET_BYTES // per_image))


class _PrefixCache:
    """Runs the sim's graph on one batch, keeping every node's value, then re-runs it from any node on
    with the values before that node taken from the kept run (torch.fx.Interpreter's initial_env)."""

    def __init__(self, sim: QuantSim, x: torch.Tensor):
        self.sim = sim
        self.nodes = list(sim.model.graph.nodes)
        interp = fx.Interpreter(sim.model, garbage_collect_values=False)
        with torch.no_grad():
            interp.run(x)
        self.env = interp.env
        self.x = x

    def nbytes(self) -> int:
        """Bytes of the kept values (tensors only)."""
        return sum(v.numel() * v.element_size() for v in self.env.values() if isinstance(v, torch.Tensor))

    @torch.no_grad()
    def run_from(self, start: int) -> torch.Tensor:
        initial = {n: self.env[n] for n in self.nodes[:start]}
        return fx.Interpreter(self.sim.model).run(self.x, initial_env=initial)


def _quantizer_nodes(sim: QuantSim) -> dict[str, fx.Node]:
    """Each activation quantizer's graph node, by the quantizer's (layer) name."""
    by_key = {f"quantizers.{key}": q.name for key, q in sim.quantizers.items()}
    return {by_key[n.target]: n for n in sim.model.graph.nodes if n.op == "call_module" and n.target in by_key}


@dataclass
class SweepWork:
    """What every sweep item reads: the calibrated sim, its ranges, the base config, the evaluation
    batches. Picklable (no lock, no loaded model), so an executor can ship it to workers once."""

    sim: QuantSim
    ranges: dict[str, RangeResult]
    base_config: QuantConfig
    xs: list[torch.Tensor]
    labels: torch.Tensor
    layers: list[str]  # every quantizable layer ("only this one" turns all the others off)
    swept: list[str]  # the layers measured: all of them, or the user's subset

    @classmethod
    def of(cls, p: Prepared, swept: list[str] | None = None) -> "SweepWork":
        layers = p.sim.layer_names()
        return cls(p.sim, p.ranges, p.base_config, p.xs, p.labels, layers, swept or layers)


def _count_correct(w: SweepWork, x: torch.Tensor, y: torch.Tensor, variant, disabled: bool,
                   errors: dict | None = None, probe: int = 128) -> dict[str, int]:
    """Correct predictions on one batch per layer for `variant(name)` configs, reusing the base run's prefix
    (the FP32 run when `disabled`).

    With `errors` (a dict to fill), the runs also give each layer's isolated output error: on the batch's
    first `probe` images, its quantizer's output against the same node of the reference run, with no extra
    forward pass."""
    starts = _layer_starts(w.sim)
    nodes = _quantizer_nodes(w.sim) if errors is not None else {}
    correct = dict.fromkeys(w.swept, 0)
    w.sim.configure(w.base_config)
    w.sim.apply_ranges(ranges=w.ranges)
    if disabled:
        with w.sim.disabled():
            cache = _PrefixCache(w.sim, x)
    else:
        cache = _PrefixCache(w.sim, x)
    for name in w.swept:
        w.sim.configure(variant(w, name))
        w.sim.apply_ranges(ranges=w.ranges)
        with w.sim.capture([name] if errors is not None else ()) as records:
            out = cache.run_from(starts[name])
        correct[name] += int((out.argmax(1) == y).sum())
        if records:
            errors[name] = single_threaded(output_errors, cache.env[nodes[name]][:probe], records[0][2][:probe])
    return correct


def _only(w: SweepWork, name: str) -> QuantConfig:
    return only_layers(w.base_config, [name], w.layers)


def _all_but(w: SweepWork, name: str) -> QuantConfig:
    return float_layers(w.base_config, [name])


def sweep_item(w: SweepWork, item: tuple[str, int]) -> tuple[str, dict[str, int], dict]:
    """One work item of the sweep: side "only" (layer i alone quantized) or "but" (all but layer i) on
    evaluation batch `b`: correct predictions per layer, and on batch 0 of "only" each layer's isolated
    output error. Deterministic, so any executor gives the numbers the local run gives."""
    side, b = item
    errors: dict | None = {} if (side == "only" and b == 0) else None
    offset = b * w.xs.batch_size if hasattr(w.xs, "batch_size") else sum(len(x) for x in w.xs[:b])
    x = w.xs[b]
    y = w.labels[offset: offset + len(x)]
    counts = _count_correct(w, x, y, _only if side == "only" else _all_but, side == "only", errors)
    return side, counts, errors or {}


def _two_sided(p: Prepared, swept: list[str], reuse_prefix: bool, say: Progress, errors: dict,
               executor: Executor) -> tuple[dict, dict]:
    """Accuracy per swept layer with only it quantized, and with all but it quantized (and, reusing the
    prefix, each layer's isolated output error into `errors`). With `reuse_prefix` the work is items of
    (side, batch) run by `executor`; otherwise one full evaluation per layer and side, here."""
    n, layers = len(p.labels), p.sim.layer_names()
    if reuse_prefix:
        items = [(side, b) for side in ("only", "but") for b in range(len(p.xs))]
        say(0.05, Msg("{n} work items: each side of the sweep on each evaluation batch", n=len(items)))
        results = executor.map(sweep_item, SweepWork.of(p, swept), items, span(say, 0.05, 0.95),
                               what=Msg("sweep items"))
        totals = {"only": dict.fromkeys(swept, 0), "but": dict.fromkeys(swept, 0)}
        for side, counts, errs in results:
            for name, c in counts.items():
                totals[side][name] += c
            errors.update(errs)
        return ({k: v / n for k, v in totals["only"].items()}, {k: v / n for k, v in totals["but"].items()})
    only_acc, but_acc = {}, {}
    for i, name in enumerate(swept):
        say(0.9 * i / len(swept), Msg("layer {i}/{n}: {layer}", i=i + 1, n=len(swept), layer=name))
        only_acc[name] = evaluate_config(p, only_layers(p.base_config, [name], layers))["accuracy"]
        but_acc[name] = evaluate_config(p, float_layers(p.base_config, [name]))["accuracy"]
    return only_acc, but_acc


def _isolated_errors(p: Prepared, name: str, layers: list[str], probe: torch.Tensor) -> dict:
    """SQNR/MSE/cosine of layer `name`'s own output when it alone is quantized."""
    p.sim.configure(only_layers(p.base_config, [name], layers))
    p.sim.apply_ranges(ranges=p.ranges)
    with p.sim.disabled(), p.sim.capture() as ref:
        p.sim(probe)
    with p.sim.capture() as out:
        p.sim(probe)
    ref_out = next(o for q, _, o in ref if q == name)
    q_out = next(o for q, _, o in out if q == name)
    return single_threaded(output_errors, ref_out, q_out)


def swept_layers(p: Prepared, names: Sequence[str] | None = None, first: int | None = None) -> list[str]:
    """The layers a sweep measures: `names` (in graph order), else the `first` N, else all. An unknown name is
    refused with the model's layer names: a typo must not give a report that silently lacks the layer."""
    layers = p.sim.layer_names()
    if names:
        unknown = [n for n in names if n not in layers]
        if unknown:
            raise ValueError(f"no quantizable layer named {', '.join(unknown)}; the layers are: {', '.join(layers)}")
        return [n for n in layers if n in set(names)]
    if first is not None and first < 1:
        raise ValueError(f"the number of layers to sweep must be at least 1, not {first}")
    return layers[:first] if first else layers


def sweep(p: Prepared, progress: Progress | None = None, reuse_prefix: bool = True,
          executor: Executor | None = None, layers: Sequence[str] | None = None) -> SensitivityReport:
    """The two-sided sweep over every layer (or the `layers` given: each still measured against all the
    others, as in a full sweep), plus each layer's isolated output error.

    With `reuse_prefix`, each evaluation starts at its layer: for "only this layer quantized"
    everything before it is the cached FP32 run, for "all but this" the cached all-quantized run,
    so a sweep costs about half of 2 x layers full evaluations. Results are identical either way, and
    with any `executor` (None: this process; qcore.run.executors.RayExecutor: Ray tasks).
    """
    say = progress or silent
    start = time.perf_counter()
    all_layers, swept = p.sim.layer_names(), swept_layers(p, layers)
    base = evaluate_config(p, p.base_config)
    errors: dict[str, dict] = {}
    executor = executor or LocalExecutor()
    only_acc, but_acc = _two_sided(p, swept, reuse_prefix, say, errors, executor)
    say(0.95, Msg("output error of each layer alone"))
    probe = p.xs[0][:128]
    kinds = {pt.name: pt.kind for pt in p.sim.points}
    rows = []
    for name in swept:
        e = errors.get(name) or _isolated_errors(p, name, all_layers, probe)
        rows.append(LayerSensitivity(name, kinds[name], only_acc[name], but_acc[name], e["sqnr_db"], e["mse"], e["cosine"]))
    _restore(p)
    say(1.0, Msg("done"))
    return SensitivityReport(
        identity=p.inputs.run_identity(), inventory=p.sim.layer_inventory(), eval_size=len(p.labels), fp32_accuracy=p.fp32_accuracy, base_accuracy=base["accuracy"],
        base_agreement=base["agreement"], config=p.base_config.to_dict(), layers=rows,
        unsupported_layers=p.sim.unsupported, seconds=round(time.perf_counter() - start, 2),
        executor=dict(executor.info()))


def _restore(p: Prepared) -> None:
    """Put the shared sim back to the base config with the shared ranges."""
    p.sim.configure(p.base_config)
    p.sim.apply_ranges(ranges=p.ranges)


def greedy_fallback(
    p: Prepared,
    report: SensitivityReport,
    budget: float = 0.01,
    max_float: int | None = None,
    latency: Callable[[QuantConfig], float] | None = None,
    progress: Progress | None = None,
) -> GreedyResult:
    """Keep the most sensitive layers in float until accuracy is within `budget` of FP32.

    Layers are ranked by how much keeping each alone in float recovers (`all_but_this` minus the
    base accuracy), ties broken by the worst isolated SQNR. Returns the cumulative curve (accuracy
    after each added float layer; measured latency too when `latency(config)` is given) and the
    first config that meets the budget.
    """
    say = progress or silent
    base = report.base_accuracy
    ranked = sorted(report.layers, key=lambda r: (-(r.all_but_this - base), r.sqnr_db))
    target = p.fp32_accuracy - budget
    limit = len(ranked) if max_float is None else min(max_float, len(ranked))
    chosen: list[str] = []

    def point(accuracy: float) -> CurvePoint:
        config = float_layers(p.base_config, chosen)
        return CurvePoint(list(chosen), accuracy, latency(config) if latency else None)

    curve = [point(base)]
    while curve[-1].accuracy < target and len(chosen) < limit:
        chosen.append(ranked[len(chosen)].name)
        say(len(chosen) / limit, Msg("{n} float layer(s): {layer}", n=len(chosen), layer=chosen[-1]))
        curve.append(point(evaluate_config(p, float_layers(p.base_config, chosen))["accuracy"]))
    _restore(p)
    return GreedyResult(budget, target, curve[-1].accuracy >= target, chosen,
                        float_layers(p.base_config, chosen).to_dict(), curve)


def weight_bytes(p: Prepared, config: QuantConfig) -> int:
    """Model weight storage under `config`: bits per weight for quantized layers, 4 bytes for float ones.
    7-bit weights (the reduced range of CPUs without VNNI) are stored in a byte all the same."""
    total = 0
    reduced = config.resolved().weight_range == "reduced"
    for name, wl in p.sim.weight_layers.items():
        cfg = config.for_layer(name)
        n = wl.layer.weight.numel()
        bits = cfg.weight_bits if cfg.quantizes_weight and cfg.weight_dtype == "int" else (
            16 if cfg.quantizes_weight else 32)
        if reduced and bits == 7:
            bits = 8
        total += n * bits // 8 + (wl.layer.bias.numel() * 4 if wl.layer.bias is not None else 0)
    return total
