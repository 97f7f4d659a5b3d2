"""What-if editing of one layer: change its clip range, bits, granularity, symmetry (or keep it in float) and see
its output SQNR and the model's accuracy within a second or two.

A `WhatIf` session is built once per model, config and evaluation set: one calibrated sim (its own copy of the
model) and the accuracy of the config as it is. Choosing a layer runs the graph once up to that layer and keeps
only the values the rest of the graph reads (`suffix.frontier`); each edit then re-runs only the suffix. An edit of
the layer's weights also changes what every later quantizer sees during calibration, so the statistics of the
quantizers after the layer are collected again (over the calibration images' frontier, also kept): the numbers
are those a fresh `calibrated_sim` of the edited config gives, which is what Sensitivity, QAT and Deploy build
once the edit is kept. Recovery steps (CLE, AdaRound, ...) are not re-run for an edit: their weights are kept.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import torch

from qcore.analysis.evaluate import sqnr_db
from qcore.analysis.sensitivity import _layer_starts
from qcore.analysis.suffix import frontier, run_suffix
from qcore.quant.build import calibrated_sim
from qcore.quant.progress import Msg, Progress, silent
from qcore.quant.qconfig import LayerConfig, QuantConfig
from qcore.quant.quantsim import Mode
from qcore.quant.stats import TensorStats
from qcore.zoo.inputs import Inputs, prepare_inputs
from qcore.zoo.models import LoadedModel

__all__ = ["WhatIf", "WhatIfResult", "WEIGHT_FIELDS", "layer_config"]

# Fields whose change alters the layer's weights, and so the statistics every later quantizer collects.
WEIGHT_FIELDS = frozenset({"weight_dtype", "weight_bits", "weight_granularity", "weight_symmetric", "weight_group_size",
                           "enabled"})
SQNR_BUDGET_BYTES = 64 * 2**20
EVAL_BUDGET_BYTES = 256 * 2**20  # the preprocessed evaluation images a session keeps  # the FP32 reference of the layer's output kept for its SQNR


def layer_config(config: QuantConfig, name: str) -> LayerConfig:
    """The layer's stored config (not `for_layer`'s view, which the weight range may narrow to 7 bits)."""
    return next((c for n, c in config.layers if n == name), config.default)


@dataclass(frozen=True)
class WhatIfResult:
    """One edit of one layer, measured: its output SQNR against FP32 (end to end, as the Calibration page's
    per-layer chart) and top-1 accuracy, with the same numbers for the current config."""

    model: str
    layer: str
    changes: dict  # LayerConfig fields changed from the current config (empty: the current config)
    layer_config: dict  # the layer's config as evaluated
    range_method: str  # "fixed" (a typed clip), the calibration method, or "float"
    clip_min: float | None
    clip_max: float | None
    layer_sqnr_db: float
    accuracy: float
    base_layer_sqnr_db: float
    base_accuracy: float
    eval_size: int
    sqnr_images: int
    recalibrated: int  # later quantizers whose statistics were collected again (weight edits)
    scored_by: str
    seconds: float

    @property
    def delta_accuracy(self) -> float:
        return self.accuracy - self.base_accuracy

    @property
    def delta_sqnr_db(self) -> float:
        return self.layer_sqnr_db - self.base_layer_sqnr_db

    def to_dict(self) -> dict:
        return {**asdict(self), "delta_accuracy": self.delta_accuracy, "delta_sqnr_db": self.delta_sqnr_db}


@dataclass
class _Layer:
    """What a chosen layer keeps: where its suffix starts, the frontiers, the FP32 reference of its output."""

    name: str
    start: int
    eval_fronts: list
    reference: torch.Tensor
    later: list[str]  # quantizers at or after the start (their statistics depend on the layer's weights)
    calib_fronts: list | None = None  # computed on the first weight edit
    base: WhatIfResult | None = None
    last: WhatIfResult | None = None
    recollected: set = field(default_factory=set)


class WhatIf:
    """An editing session over one model, config and evaluation set (never shared between users: it holds a sim
    it reconfigures for every edit)."""

    def __init__(self, inputs: Inputs, config: QuantConfig, progress: Progress | None = None, channels_last: bool = True):
        say = progress or silent
        self.inputs = inputs
        say(0.0, Msg("statistics pass over {n} images", n=inputs.calib_size))
        self.sim = calibrated_sim(inputs.loaded.module, config, inputs.calib_batches)
        self.config = self.sim.config
        self.base_stats = dict(self.sim.stats)
        # Channels-last convolutions run about twice as fast on x86 CPUs (oneDNN's native layout); the sim is this
        # session's own copy, so converting it touches no shared model. The last bits of a convolution may differ
        # from the default layout's: a fresh sim agrees exactly with channels_last=False (tests compare both).
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.sim.to(memory_format=self.memory_format)
        self.eval = [self._layout(x) for x in inputs.eval_batches]  # preprocessed once
        self.offsets = [0]
        for x in self.eval:
            self.offsets.append(self.offsets[-1] + len(x))
        self.starts = _layer_starts(self.sim)
        self.layer: _Layer | None = None
        say(0.5, Msg("evaluation of the current config"))
        self.base_accuracy = self._accuracy([self.sim(x) for x in self.eval])
        say(1.0, Msg("done"))

    @classmethod
    def build(cls, model: str | LoadedModel, config: QuantConfig | None = None, data: str | None = None,
              calib_size: int = 512, eval_size: int = 1000, seed: int = 0,
              progress: Progress | None = None, channels_last: bool = True) -> "WhatIf":
        """Load the inputs (the same images, by size and seed, as every other experiment) and build a session. The
        session keeps its evaluation batches preprocessed: at most EVAL_BUDGET_BYTES of them (1000 Fashion-MNIST
        images take 3 MB; an ImageNet model gets about 440 images at 224x224)."""
        inputs = prepare_inputs(model, data, calib_size, eval_size, seed)
        keep = max(1, EVAL_BUDGET_BYTES // (4 * math.prod(inputs.loaded.spec.input_shape)))
        if inputs.eval_size > keep:
            inputs = replace(inputs, eval_batches=inputs.eval_batches.first(keep), labels=inputs.labels[:keep])
        return cls(inputs, config or QuantConfig(), progress, channels_last)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    @property
    def layers(self) -> list[str]:
        return self.sim.layer_names()

    def _accuracy(self, outs: list[torch.Tensor]) -> float:
        preds = torch.cat([o.argmax(1) for o in outs])
        return int((preds == self.inputs.labels).sum()) / len(preds)

    def applied_range(self, name: str):
        """The range layer `name` has in the sim as configured now (the last edit's; None where it is float or not
        an integer grid). The current config's range of the chosen layer is `layer.base`'s."""
        return self.sim.quantizer(name).range if self.sim.quantizer(name).quantizes_int else None

    # --- choosing a layer -----------------------------------------------------------------------
    @torch.no_grad()
    def choose(self, name: str) -> WhatIfResult:
        """Make `name` the edited layer: run the graph up to it once, keep its frontier and its FP32 output."""
        if name not in self.starts:
            raise KeyError(f"no quantized layer named {name!r}; choose from {', '.join(self.layers)}")
        self._configure(self.config, None)
        start = self.starts[name]
        fronts = [frontier(self.sim.model, x, start) for x in self.eval]
        order = {n: i for i, n in enumerate(self.sim.model.graph.nodes)}
        keys = {f"quantizers.{k}": q.name for k, q in self.sim.quantizers.items()}
        later = [keys[n.target] for n in self.sim.model.graph.nodes
                 if n.op == "call_module" and n.target in keys and order[n] >= start]
        self.layer = _Layer(name, start, fronts, self._reference(name), later)
        self.layer.base = self._measure({}, time.perf_counter())
        self.layer.last = self.layer.base
        return self.layer.base

    def _reference(self, name: str) -> torch.Tensor:
        """The FP32 model's values at the layer's output, on as many evaluation images as SQNR_BUDGET_BYTES holds."""
        with self.sim.disabled(), self.sim.capture([name]) as rec:
            self.sim(self.eval[0][:1])
        per_image = max(1, rec[0][2].numel() * rec[0][2].element_size())
        n = max(1, min(self.offsets[-1], SQNR_BUDGET_BYTES // per_image))
        with self.sim.disabled(), self.sim.capture([name]) as rec:
            self.sim(self._layout(self.inputs.eval_head(n)))
        return rec[-1][2]

    # --- edits -------------------------------------------------------------------------------------
    def edit(self, **changes) -> WhatIfResult:
        """The chosen layer with `changes` (LayerConfig fields, e.g. act_clip=(0, 4), weight_bits=4, enabled=False)
        on top of the current config, measured. Fields equal to the current ones are no change."""
        if self.layer is None:
            raise RuntimeError("choose a layer before editing it")
        start_time = time.perf_counter()
        stored = layer_config(self.config, self.layer.name)
        changes = {k: v for k, v in changes.items() if getattr(stored, k) != (tuple(v) if isinstance(v, list) else v)}
        config = self.config.with_layer(self.layer.name, **changes) if changes else self.config
        self._configure(config, changes)
        self.layer.last = self._measure(changes, start_time)
        return self.layer.last

    def reset(self) -> WhatIfResult:
        """Back to the current config (the numbers measured again, so that a reset shows it restored)."""
        return self.edit()

    def keep(self) -> QuantConfig:
        """Make the last edit part of the current config; returns that config (for Sensitivity, QAT, Deploy)."""
        if self.layer is None or self.layer.last is None:
            return self.config
        self.config = self.sim.config
        self.base_stats = dict(self.sim.stats)
        self.layer.recollected = set()
        last = self.layer.last
        self.base_accuracy = last.accuracy
        self.layer.base = replace(last, changes={}, base_accuracy=last.accuracy, base_layer_sqnr_db=last.layer_sqnr_db)
        self.layer.last = self.layer.base
        return self.config

    def _configure(self, config: QuantConfig, changes: dict | None) -> int:
        """Apply `config` with the current config's statistics, collecting the later quantizers' again when the
        edit changes the layer's weights; returns how many were collected again."""
        if self.layer is not None and self.layer.recollected:
            self.sim.stats = dict(self.base_stats)
            self.sim._range_cache = {k: v for k, v in self.sim._range_cache.items() if k[0] not in self.layer.recollected}
            self.layer.recollected = set()
        self.sim.configure(config)
        touched = set(changes or ()) & WEIGHT_FIELDS
        if touched and (self.layer.name in self.sim.weight_layers or "enabled" in touched):
            self._recollect()
            self.sim.apply_ranges()
            return len(self.layer.recollected)
        return 0

    @torch.no_grad()
    def _recollect(self) -> None:
        """Statistics of the quantizers at and after the layer, from the calibration images' frontier (activations
        in float, weights as configured: what `collect_stats` does)."""
        layer = self.layer
        if layer.calib_fronts is None:
            with self._modes({}):
                layer.calib_fronts = [frontier(self.sim.model, self._layout(x), layer.start)
                                      for x in self.inputs.calib_batches]
        fresh = {name: TensorStats(name) for name in layer.later}
        with self._modes(fresh):
            for front in layer.calib_fronts:
                run_suffix(self.sim.model, front)
        self.sim.stats = {**self.sim.stats, **fresh}
        self.sim._range_cache = {k: v for k, v in self.sim._range_cache.items() if k[0] not in fresh}
        layer.recollected = set(fresh)

    @contextmanager
    def _modes(self, observe: dict[str, TensorStats]):
        """Every activation quantizer in float, those in `observe` collecting into the given statistics."""
        saved = {k: (q.mode, q.stats) for k, q in self.sim.quantizers.items()}
        try:
            for q in self.sim.quantizers.values():
                q.mode = Mode.OBSERVE if q.name in observe else Mode.FLOAT
                q.stats = observe.get(q.name, q.stats)
            yield
        finally:
            for k, q in self.sim.quantizers.items():
                q.mode, q.stats = saved[k]

    @torch.no_grad()
    def _measure(self, changes: dict, start_time: float) -> WhatIfResult:
        layer, k = self.layer, len(self.layer.reference)
        outs, test = [], []
        with self.sim.capture([layer.name]) as rec:
            for front in layer.eval_fronts:
                outs.append(run_suffix(self.sim.model, front))
                taken = sum(len(t) for t in test)
                if taken < k and rec:
                    test.append(rec[-1][2][: k - taken])
                rec.clear()
        rng = self.applied_range(layer.name)
        cfg = layer_config(self.sim.config, layer.name)
        base = layer.base
        acc, sqnr = self._accuracy(outs), sqnr_db(layer.reference, torch.cat(test))
        return WhatIfResult(
            model=self.inputs.loaded.name, layer=layer.name, changes=dict(changes), layer_config=asdict(cfg),
            range_method=rng.method if rng else ("float" if not cfg.quantizes_act else cfg.act_dtype),
            clip_min=rng.clip_min if rng else None, clip_max=rng.clip_max if rng else None,
            layer_sqnr_db=sqnr, accuracy=acc, base_layer_sqnr_db=base.layer_sqnr_db if base else sqnr,
            base_accuracy=base.accuracy if base else acc, eval_size=self.offsets[-1], sqnr_images=k,
            recalibrated=len(layer.recollected), scored_by=self.inputs.scored_by,
            seconds=round(time.perf_counter() - start_time, 4))
