"""Automatic diagnosis: which layers cause the accuracy drop, why, and which QuantConfig change fixes it.

One calibrated simulation is measured three ways, as AIMET's QuantAnalyzer does: the whole model with only its
weights quantized and with only its activations quantized (the other quantizers switched off in the same sim,
with the same calibrated ranges), and per layer the output SQNR when only that layer's weights, or only its
output activation, are quantized. Then each layer's statistics go through the cause detectors of
`diagnosis_causes` (outliers, unequal weight channels, negative values on a non-negative grid, residual adds of
unequal scales, too few bits), and the causes are ranked by the noise their fix removes (estimated).

An estimate only ranks: `apply_fix` builds a new calibrated simulation with the fix and measures its accuracy on
the same evaluation images, so a fix is never assumed to work.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import torch
from torch import fx, nn

from qcore.analysis.diagnosis_causes import (HEALTHY_SQNR_DB, Cause, act_bits_cause, add_scale_cause, negative_clip_cause,
                                             outlier_cause, spread_cause, weight_bits_cause)
from qcore.analysis.evaluate import logits, scores, single_threaded, sqnr_db
from qcore.analysis.reports import RunReport
from qcore.quant.build import calibrated_sim
from qcore.quant.progress import Msg, Progress, silent, span
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import ADD_FUNCTIONS, Mode, QuantSim
from qcore.quant.recovery.reference import fp32_reference
from qcore.zoo.inputs import Inputs, prepare_inputs
from qcore.zoo.models import LoadedModel

__all__ = ["LayerDiagnosis", "DiagnosisReport", "FixResult", "Diagnosis", "diagnose", "apply_fix", "only_quantized",
           "layer_split", "add_inputs", "find_causes", "rank"]

PROBE_IMAGES = 64  # images the per-layer SQNRs are measured on


@dataclass(frozen=True)
class LayerDiagnosis:
    """One quantization point: its output SQNR (dB, against float, on the probe images) with only its weights
    quantized and with only its output activation quantized (None where it has none that is quantized), and the
    kinds of the causes found on it."""

    name: str
    kind: str  # "conv", "linear", "add", "act", "input", ...
    module_type: str
    weight_sqnr_db: float | None
    act_sqnr_db: float | None
    causes: tuple[str, ...]


@dataclass
class DiagnosisReport(RunReport):
    """`python -m qcore diagnose`: the QuantAnalyzer split and every cause found, ranked, with its fix."""

    kind: ClassVar[str] = "diagnosis"
    eval_size: int
    config: dict
    fp32_accuracy: float
    accuracy: float  # every quantizer of the config on
    weights_only_accuracy: float  # activation quantizers off
    acts_only_accuracy: float  # weight quantizers off
    layers: list[LayerDiagnosis]
    causes: list[Cause]  # ranked: the largest estimated noise reduction first
    probe_images: int
    seconds: float

    @property
    def weight_share(self) -> float | None:
        """The weights' share of the two one-sided drops (None when neither drops)."""
        w = max(0.0, self.fp32_accuracy - self.weights_only_accuracy)
        a = max(0.0, self.fp32_accuracy - self.acts_only_accuracy)
        return w / (w + a) if w + a > 0 else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["causes"] = [c.to_dict() for c in self.causes]
        out["weight_share"] = self.weight_share
        return out

    def metrics(self) -> dict[str, float]:
        return {"fp32_accuracy": self.fp32_accuracy, "accuracy": self.accuracy,
                "weights_only_accuracy": self.weights_only_accuracy, "acts_only_accuracy": self.acts_only_accuracy,
                "causes": float(len(self.causes))}


@dataclass(frozen=True)
class FixResult:
    """A fix applied and re-measured: top-1 on the same evaluation images before and after."""

    cause: Cause
    before: float
    after: float
    eval_size: int
    config: dict  # the whole QuantConfig with the fix

    @property
    def delta(self) -> float:
        return self.after - self.before

    def to_dict(self) -> dict:
        return {"cause": self.cause.to_dict(), "before": self.before, "after": self.after, "delta": self.delta,
                "eval_size": self.eval_size, "config": self.config}


@dataclass
class Diagnosis:
    """A finished diagnosis with what `apply_fix` needs: the inputs (same images) and the config it diagnosed."""

    report: DiagnosisReport
    inputs: Inputs
    config: QuantConfig
    sim: QuantSim


def only_quantized(sim: QuantSim, weights: set[str] | None = None, acts: set[str] | None = None):
    """Only these weight layers and activation quantizers on (None: all): `QuantSim.only`."""
    return sim.only(weights, acts)


def _captured(sim: QuantSim, probe: torch.Tensor, name: str) -> torch.Tensor:
    with sim.capture([name]) as records:
        sim(probe)
    return records[0][2]


@torch.no_grad()
def layer_split(sim: QuantSim, probe: torch.Tensor, progress: Progress | None = None) -> dict[str, tuple]:
    """Per quantization point: (SQNR with only its weights quantized, SQNR with only its activation quantized),
    each against the float model at that point on `probe`; None where that side is not quantized."""
    say = progress or silent
    with fp32_reference(sim), sim.capture() as ref_records:
        sim(probe)
    ref = {name: out for name, _, out in ref_records}
    quantizers = {q.name: q for q in sim.quantizers.values()}
    out = {}
    for i, point in enumerate(sim.points):
        say(i / len(sim.points), Msg("layer {i}/{n}: {layer}", i=i + 1, n=len(sim.points), layer=point.name))
        w = a = None
        if point.name in sim.weight_layers and sim.weight_layers[point.name].enabled:
            with only_quantized(sim, {point.name}, set()):
                w = single_threaded(sqnr_db, ref[point.name], _captured(sim, probe, point.name))
        if quantizers[point.name].mode == Mode.QUANT:
            with only_quantized(sim, set(), {point.name}):
                a = single_threaded(sqnr_db, ref[point.name], _captured(sim, probe, point.name))
        out[point.name] = (w, a)
    return out


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_"))


def add_inputs(sim: QuantSim) -> dict[str, list[str]]:
    """For each residual add's quantization point, the quantization points its two inputs come from (walking back
    through single-input nodes such as a ReLU or a flatten)."""
    names = {f"quantizers.{k}": q.name for k, q in sim.quantizers.items()}
    add_points = {p.name for p in sim.points if p.kind == "add"}
    found = {}
    for node in sim.model.graph.nodes:
        if node.op != "call_module" or names.get(node.target) not in add_points:
            continue
        add = node.args[0]
        while isinstance(add, fx.Node) and not _is_add(add) and len(add.all_input_nodes) == 1:
            add = add.all_input_nodes[0]
        sources = []
        for arg in add.all_input_nodes if isinstance(add, fx.Node) and _is_add(add) else ():
            while not (arg.op == "call_module" and arg.target in names) and len(arg.all_input_nodes) == 1:
                arg = arg.all_input_nodes[0]
            if arg.op == "call_module" and arg.target in names:
                sources.append(names[arg.target])
        found[names[node.target]] = sources
    return found


def _layer_causes(sim: QuantSim, point, adds: dict[str, list[str]]) -> list[Cause]:
    """Every detector that applies to this point, on its statistics and its folded weight."""
    cfg = sim.config.for_layer(point.name)
    q = sim.quantizer(point.name)
    found = []
    if q.quantizes_int and point.name in sim.stats:
        stats, scheme, method = sim.stats[point.name], q.scheme, cfg.act_method
        found += [outlier_cause(point.name, stats, scheme, method),
                  negative_clip_cause(point.name, stats, scheme, method, cfg),
                  act_bits_cause(point.name, stats, scheme, cfg)]
        if point.kind == "add":
            inputs = [sim.stats[n] for n in adds.get(point.name, []) if n in sim.stats]
            found.append(add_scale_cause(point.name, inputs, q.range, scheme))
    wl = sim.weight_layers.get(point.name)
    if wl is not None and wl.enabled:
        w = wl.layer.weight.detach()
        depthwise = isinstance(wl.layer, nn.Conv2d) and wl.layer.groups > 1 and wl.layer.groups == wl.layer.in_channels
        found += [spread_cause(point.name, w, cfg, depthwise), weight_bits_cause(point.name, w, cfg, wl.effective_scheme(w))]
    return [c for c in found if c is not None]


def find_causes(sim: QuantSim, split: dict[str, tuple]) -> list[Cause]:
    """Every detector on every point, each cause given its side's measured SQNR from `split`; causes on a side
    that measures HEALTHY_SQNR_DB or more are left out (they cost nothing worth fixing); ranked."""
    adds = add_inputs(sim)
    found = [c for p in sim.points for c in _layer_causes(sim, p, adds)]
    measured = [replace(c, layer_sqnr_db=split[c.layer][0 if c.side == "weights" else 1]) for c in found]
    return rank([c for c in measured if c.layer_sqnr_db is None or c.layer_sqnr_db < HEALTHY_SQNR_DB])


def rank(causes: list[Cause]) -> list[Cause]:
    """Worst layer first: by the measured output SQNR of the side (weights or activation) the cause sits on; within
    a layer, fixes that keep the chosen bit widths before more bits, then by the noise the fix removes (estimated)."""
    def key(c: Cause):
        measured = c.layer_sqnr_db if c.layer_sqnr_db is not None else math.inf
        return measured, c.kind == "too_few_bits", -c.severity_db

    return sorted(causes, key=key)


def _accuracy(model, inp: Inputs) -> float:
    return scores(logits(model, inp.eval_batches), inp.labels).top1


def _split_accuracies(sim: QuantSim, inp: Inputs, say: Progress) -> tuple[float, float, float, float]:
    """FP32, all quantized, weights only, activations only: top-1 on the evaluation images."""
    say(0.0, Msg("FP32 evaluation"))
    fp32 = _accuracy(inp.loaded.module, inp)
    say(0.25, Msg("evaluating {path}", path="W+A"))
    both = _accuracy(sim, inp)
    say(0.5, Msg("evaluating {path}", path="W"))
    with only_quantized(sim, None, set()):
        weights = _accuracy(sim, inp)
    say(0.75, Msg("evaluating {path}", path="A"))
    with only_quantized(sim, set(), None):
        acts = _accuracy(sim, inp)
    return fp32, both, weights, acts


def diagnose(
    model: str | LoadedModel,
    config: QuantConfig | None = None,
    data: str | None = None,
    calib_size: int = 512,
    eval_size: int | None = 1000,
    seed: int = 0,
    probe_images: int = PROBE_IMAGES,
    progress: Progress | None = None,
) -> Diagnosis:
    """Calibrate `config` on `model`, measure the weights/activations split and every layer's causes."""
    say = progress or silent
    start = time.perf_counter()
    config = (config or QuantConfig()).resolved()
    say(0.0, Msg("loading images"))
    inp = prepare_inputs(model, data, calib_size, eval_size, seed)
    sim = calibrated_sim(inp.loaded.module, config, inp.calib_batches, span(say, 0.02, 0.2))
    fp32, both, weights, acts = _split_accuracies(sim, inp, span(say, 0.2, 0.6))
    probe = inp.eval_head(min(probe_images, inp.eval_size))
    split = layer_split(sim, probe, span(say, 0.6, 0.95))
    say(0.95, Msg("looking for causes"))
    causes = find_causes(sim, split)
    layers = [LayerDiagnosis(p.name, p.kind, p.module_type, *split[p.name],
                             tuple(c.kind for c in causes if c.layer == p.name)) for p in sim.points]
    say(1.0, Msg("done"))
    report = DiagnosisReport(
        identity=inp.run_identity(), inventory=sim.layer_inventory(), eval_size=inp.eval_size, config=config.to_dict(),
        fp32_accuracy=fp32,
        accuracy=both, weights_only_accuracy=weights, acts_only_accuracy=acts, layers=layers, causes=causes,
        probe_images=len(probe), seconds=round(time.perf_counter() - start, 2))
    return Diagnosis(report, inp, config, sim)


def apply_fix(d: Diagnosis, cause: Cause | int = 0, progress: Progress | None = None) -> FixResult:
    """Apply `cause`'s fix (or the cause ranked `cause`) to the diagnosed config, calibrate a new simulation with it
    on the same calibration images, and measure top-1 on the same evaluation images: `before` is the diagnosis's
    own measured accuracy, `after` the new one."""
    say = progress or silent
    if isinstance(cause, int):
        if not d.report.causes:
            raise ValueError("the diagnosis found no cause, so there is no fix to apply")
        cause = d.report.causes[cause]
    fixed = cause.fix.apply(d.config)
    say(0.0, Msg("calibrating with the fix"))
    sim = calibrated_sim(d.inputs.loaded.module, fixed, d.inputs.calib_batches, span(say, 0.0, 0.5))
    say(0.5, Msg("evaluating {path}", path=cause.fix.describe()))
    after = _accuracy(sim, d.inputs)
    say(1.0, Msg("done"))
    return FixResult(cause, d.report.accuracy, after, d.inputs.eval_size, fixed.to_dict())
