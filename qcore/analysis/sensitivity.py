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

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import fx

from qcore.quant.calibration import RangeResult
from qcore.zoo.data import calibration_subset, eval_subset
from qcore.analysis.evaluate import batches, output_errors
from qcore.analysis.experiments import check_compatible, default_data
from qcore.zoo.models import LoadedModel, load_model
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim

__all__ = ["Prepared", "prepare", "evaluate_config", "sweep", "greedy_fallback", "only_layers", "float_layers",
           "weight_bytes", "latency_probe"]


@dataclass
class Prepared:
    """Everything evaluations share: the calibrated sim, its ranges, inputs, labels and FP32 results."""

    loaded: LoadedModel
    sim: QuantSim
    ranges: dict[str, RangeResult]
    xs: list[torch.Tensor]
    labels: torch.Tensor
    fp32_preds: torch.Tensor
    fp32_accuracy: float
    base_config: QuantConfig
    data: str
    seed: int = 0
    calib_size: int = 0


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


@torch.no_grad()
def _predict(model, xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([model(x).argmax(1) for x in xs])


def prepare(
    model: str | LoadedModel,
    config: QuantConfig | None = None,
    data: str | None = None,
    calib_size: int = 512,
    eval_size: int | None = 1000,
    seed: int = 0,
) -> Prepared:
    """Load, run the one statistics pass, compute every layer's range, and run FP32 once."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    config = config or QuantConfig()
    data_name = data or default_data(loaded)
    calib = calibration_subset(data_name, calib_size, seed)
    evald = eval_subset(data_name, eval_size, seed)
    check_compatible(loaded, evald)
    pre = loaded.spec.preprocess
    sim = QuantSim(loaded.module, config)
    sim.collect_stats(list(batches(calib.images, pre)))
    ranges = sim.apply_ranges()
    xs = list(batches(evald.images, pre, 500))
    fp32_preds = _predict(loaded.module, xs)
    acc = int((fp32_preds == evald.labels).sum()) / len(evald.labels)
    return Prepared(loaded, sim, ranges, xs, evald.labels, fp32_preds, acc, config, data_name, seed, len(calib))


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

    @torch.no_grad()
    def run_from(self, start: int) -> torch.Tensor:
        initial = {n: self.env[n] for n in self.nodes[:start]}
        return fx.Interpreter(self.sim.model).run(self.x, initial_env=initial)


def _count_correct(p: Prepared, layers: list[str], reference: QuantConfig, variant, disabled: bool) -> dict[str, int]:
    """Correct predictions per layer for `variant(name)` configs, reusing the `reference` run's prefix."""
    starts = _layer_starts(p.sim)
    correct = dict.fromkeys(layers, 0)
    offset = 0
    for x in p.xs:
        y = p.labels[offset: offset + len(x)]
        offset += len(x)
        p.sim.configure(reference)
        p.sim.apply_ranges(ranges=p.ranges)
        if disabled:
            with p.sim.disabled():
                cache = _PrefixCache(p.sim, x)
        else:
            cache = _PrefixCache(p.sim, x)
        for name in layers:
            p.sim.configure(variant(name))
            p.sim.apply_ranges(ranges=p.ranges)
            correct[name] += int((cache.run_from(starts[name]).argmax(1) == y).sum())
        del cache
    return correct


def sweep(p: Prepared, progress: Callable[[str, float | None], None] | None = None, reuse_prefix: bool = True) -> dict:
    """The two-sided sweep over every layer, plus each layer's isolated output error.

    With `reuse_prefix`, each evaluation starts at its layer: for "only this layer quantized"
    everything before it is the cached FP32 run, for "all but this" the cached all-quantized run,
    so a sweep costs about half of 2 x layers full evaluations. Results are identical either way.
    """
    say = progress or (lambda msg, fraction=None: None)
    start = time.perf_counter()
    layers = p.sim.layer_names()
    base = evaluate_config(p, p.base_config)
    n = len(p.labels)
    if reuse_prefix:
        say("only one layer quantized, each layer in turn", 0.05)
        only = _count_correct(p, layers, p.base_config, lambda name: only_layers(p.base_config, [name], layers), True)
        say("all layers quantized but one, each layer in turn", 0.5)
        but = _count_correct(p, layers, p.base_config, lambda name: float_layers(p.base_config, [name]), False)
        only_acc = {k: v / n for k, v in only.items()}
        but_acc = {k: v / n for k, v in but.items()}
    else:
        only_acc, but_acc = {}, {}
        for i, name in enumerate(layers):
            say(f"layer {i + 1}/{len(layers)}: {name}", 0.9 * i / len(layers))
            only_acc[name] = evaluate_config(p, only_layers(p.base_config, [name], layers))["accuracy"]
            but_acc[name] = evaluate_config(p, float_layers(p.base_config, [name]))["accuracy"]
    say("output error of each layer alone", 0.95)
    probe = p.xs[0][:128]
    rows = []
    for name in layers:
        p.sim.configure(only_layers(p.base_config, [name], layers))
        p.sim.apply_ranges(ranges=p.ranges)
        with p.sim.disabled(), p.sim.capture() as ref:
            p.sim(probe)
        with p.sim.capture() as out:
            p.sim(probe)
        ref_out = next(o for q, _, o in ref if q == name)
        q_out = next(o for q, _, o in out if q == name)
        errors = output_errors(ref_out, q_out)
        kind = next(pt.kind for pt in p.sim.points if pt.name == name)
        rows.append({"name": name, "kind": kind, "only_this_quantized": only_acc[name], "all_but_this": but_acc[name],
                     "sqnr_db": errors["sqnr_db"], "mse": errors["mse"], "cosine": errors["cosine"]})
    p.sim.configure(p.base_config)
    p.sim.apply_ranges(ranges=p.ranges)
    say("done", 1.0)
    return {"model": p.loaded.name, "model_id": p.loaded.info["sha256"][:16], "data": p.data,
            "seed": p.seed, "calib_size": p.calib_size, "eval_size": n, "fp32_accuracy": p.fp32_accuracy,
            "base_accuracy": base["accuracy"], "base_agreement": base["agreement"],
            "config": p.base_config.to_dict(), "layers": rows, "unsupported_layers": p.sim.unsupported, "seconds": round(time.perf_counter() - start, 2)}


def greedy_fallback(
    p: Prepared,
    sweep_report: dict,
    budget: float = 0.01,
    max_float: int | None = None,
    latency: Callable[[QuantConfig], float] | None = None,
    progress: Callable[[str, float | None], None] | None = None,
) -> dict:
    """Keep the most sensitive layers in float until accuracy is within `budget` of FP32.

    Layers are ranked by how much keeping each alone in float recovers (`all_but_this` minus the
    base accuracy), ties broken by the worst isolated SQNR. Returns the cumulative curve (accuracy
    after each added float layer; measured latency too when `latency(config)` is given) and the
    first config that meets the budget.
    """
    say = progress or (lambda msg, fraction=None: None)
    base = sweep_report["base_accuracy"]
    ranked = sorted(sweep_report["layers"], key=lambda r: (-(r["all_but_this"] - base), r["sqnr_db"]))
    target = p.fp32_accuracy - budget
    limit = len(ranked) if max_float is None else min(max_float, len(ranked))
    chosen: list[str] = []
    config = p.base_config
    point = {"float_layers": [], "accuracy": base}
    if latency:
        point["latency_ms"] = latency(config)
    curve = [point]
    met = base >= target
    while not met and len(chosen) < limit:
        chosen.append(ranked[len(chosen)]["name"])
        say(f"{len(chosen)} float layer(s): {chosen[-1]}", len(chosen) / limit)
        config = float_layers(p.base_config, chosen)
        point = {"float_layers": list(chosen), "accuracy": evaluate_config(p, config)["accuracy"]}
        if latency:
            point["latency_ms"] = latency(config)
        curve.append(point)
        met = point["accuracy"] >= target
    p.sim.configure(p.base_config)
    p.sim.apply_ranges(ranges=p.ranges)
    return {"budget": budget, "target_accuracy": target, "met": met, "float_layers": chosen,
            "config": float_layers(p.base_config, chosen).to_dict(), "curve": curve}


def weight_bytes(p: Prepared, config: QuantConfig) -> int:
    """Model weight storage under `config`: bits per weight for quantized layers, 4 bytes for float ones."""
    total = 0
    for name, wl in p.sim.weight_layers.items():
        cfg = config.for_layer(name)
        n = wl.layer.weight.numel()
        bits = cfg.weight_bits if cfg.quantizes_weight and cfg.weight_dtype == "int" else (
            16 if cfg.quantizes_weight else 32)
        total += n * bits // 8 + (wl.layer.bias.numel() * 4 if wl.layer.bias is not None else 0)
    return total


def latency_probe(p: Prepared, out_dir, threads: int = 2, iters: int = 20, warmup: int = 3):
    """A function config -> measured batch-1 latency (ms) of the real ONNX Runtime INT8 model.

    Each call exports the config's INT8 model and times it interleaved with the FP32 ONNX Runtime
    model in this process; partial quantization pays for its quantize/dequantize transitions here.
    """
    from pathlib import Path

    from qcore.runtime.backends import ort as ort_backend
    from qcore.runtime.machine import MACHINE_LOCK
    from qcore.runtime.latency import measure_interleaved

    out_dir = Path(out_dir)
    shape = p.loaded.spec.input_shape
    fp32 = ort_backend.fp32_runner(p.loaded.module, shape, out_dir, threads)
    x = p.xs[0][:1]
    fp32_ms: list[float] = []

    def measure(config: QuantConfig) -> float:
        p.sim.configure(config)
        p.sim.apply_ranges(ranges=p.ranges)
        int8 = ort_backend.int8_runner(p.sim, shape, out_dir, threads)
        with MACHINE_LOCK:
            timed = measure_interleaved({"fp32": fp32.run, "int8": int8.run}, x, threads, warmup, iters)
        fp32_ms.append(timed["fp32"].median_ms)
        return timed["int8"].median_ms

    measure.fp32_ms = fp32_ms  # FP32 medians from the same rounds, for speedup ratios
    return measure
