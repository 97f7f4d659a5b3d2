"""Typed results of the analysis experiments: calibration comparisons and studies, sensitivity sweeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from qcore.quant.inventory import LayerInventory
from qcore.zoo.report import Report, RunIdentity

__all__ = ["RunReport", "MethodResult", "CalibrationReport", "StudyRow", "CalibrationStudy", "ClippingRow", "ClippingReport", "LayerSensitivity",
           "CurvePoint", "GreedyResult", "SensitivityReport", "RecoveryRow", "RecoveryReport"]


@dataclass
class RunReport(Report):
    """A run of the engine on a model: which model on which data and CPU (`identity`), and which of its layers
    were quantized and which stayed float (`inventory`). Its JSON nests them: {"identity": {...},
    "inventory": {...}, ...the run's own fields}."""

    identity: RunIdentity
    inventory: LayerInventory


@dataclass
class MethodResult:
    method: str
    accuracy: float
    top5: float
    agreement: float  # top-1 agreement with FP32
    seconds: float
    logit_sqnr_db: float  # FP32 logits vs these (no labels needed)
    kl_vs_fp32: float  # mean KL(FP32 softmax || this softmax), nats
    # The method whose ranges were evaluated, and why it is not `method` (a method refused at this bit
    # width, e.g. entropy below 3 bits, falls back to the nearest one): shown beside the row, never silent.
    used_method: str = ""
    note: str = ""


@dataclass
class CalibrationReport(RunReport):
    """One statistics pass, then every calibration method evaluated end to end (`python -m qcore calibrate`)."""

    kind: ClassVar[str] = "calibration"
    eval_size: int
    act_bits: int
    weight_bits: int
    granularity: str
    fp32_accuracy: float
    fp32_top5: float
    methods: list[MethodResult]
    stats_pass_seconds: float
    fp32_pass_seconds: float
    quantizers: int
    unsupported_layers: list[str]
    config: dict

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), **{f"accuracy {m.method} A{self.act_bits}": m.accuracy for m in self.methods}}


@dataclass
class StudyRow:
    method: str
    act_bits: int
    accuracy: float
    agreement: float
    note: str = ""  # why another method's ranges were used at this width (see MethodResult.note), else empty


@dataclass
class CalibrationStudy(RunReport):
    """Everything the calibration page shows, from one statistics pass: accuracy per method and bit width,
    each method's range and end-to-end SQNR per layer at the first bit width, per-channel weight ranges."""

    kind: ClassVar[str] = "calibration"
    eval_size: int
    fp32_accuracy: float
    methods: list[str]
    act_bits: list[int]
    weight_bits: int
    granularity: str
    symmetric: bool
    weight_range: str  # "full" or "reduced", as resolved for this CPU
    accuracy: list[StudyRow]
    ranges: dict[str, dict[str, dict]]  # method -> layer -> RangeResult.to_dict()
    layer_sqnr_db: dict[str, dict[str, float]]  # method -> layer -> dB
    points: list[dict]  # {"name", "kind", "type"} per quantizer, in graph order
    weights: dict[str, dict]  # layer -> {"min", "max", "values"}
    stats_pass_seconds: float
    unsupported_layers: list[str]

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), **{f"accuracy {r.method} A{r.act_bits}": r.accuracy for r in self.accuracy}}

    def point_type(self, name: str) -> str:
        return next(p["type"] for p in self.points if p["name"] == name)


@dataclass
class ClippingRow:
    model: str  # "original" or "clipped to ±B"
    method: str
    accuracy: float
    fp32_accuracy: float


@dataclass
class ClippingReport:
    """The GELU10 experiment: accuracy per method with and without clamped unbounded activations."""

    model: str
    bound: float
    act_bits: int
    rows: list[ClippingRow]
    clipped_activations: int


@dataclass
class LayerSensitivity:
    name: str
    kind: str
    only_this_quantized: float
    all_but_this: float
    sqnr_db: float
    mse: float
    cosine: float


@dataclass
class CurvePoint:
    """One step of the greedy fallback: the float layers so far and what they give."""

    float_layers: list[str]
    accuracy: float
    latency_ms: float | None = None
    fp32_ms: float | None = None
    weight_bytes: int | None = None


@dataclass
class GreedyResult:
    budget: float
    target_accuracy: float
    met: bool
    float_layers: list[str]
    config: dict
    curve: list[CurvePoint]


@dataclass
class SensitivityReport(RunReport):
    """The two-sided per-layer sweep (and, when asked, the greedy float fallback)."""

    kind: ClassVar[str] = "sensitivity"
    eval_size: int
    fp32_accuracy: float
    base_accuracy: float
    base_agreement: float
    config: dict
    layers: list[LayerSensitivity]
    unsupported_layers: list[str]
    seconds: float
    greedy: GreedyResult | None = field(default=None)
    executor: dict = field(default_factory=lambda: {"engine": "local", "workers": 1})  # what ran the sweep

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        if self.layers:
            out["worst layer accuracy (only it quantized)"] = min(r.only_this_quantized for r in self.layers)
            out["layers"] = float(len(self.layers))
        if self.greedy:
            out["greedy float layers"] = float(len(self.greedy.float_layers))
        return out


@dataclass
class RecoveryRow:
    """One combination of recovery steps: its accuracy, FP32 agreement, per-layer output SQNR and step times."""

    steps: list[str]
    accuracy: float
    agreement: float
    seconds: float
    step_seconds: dict[str, float]
    layer_sqnr_db: dict[str, float]
    changes: dict  # what each step changed (scales, bias shifts, flipped roundings), by step name


@dataclass
class RecoveryReport(RunReport):
    """Plain PTQ against each step added in turn (`python -m qcore recover`)."""

    kind: ClassVar[str] = "recovery"
    eval_size: int
    config: dict
    fp32_accuracy: float
    baseline_accuracy: float
    rows: list[RecoveryRow]
    weights_before: dict  # per-channel weight min/max of every layer under plain PTQ (BN folded)
    weights_after: dict  # the same after all the steps (CLE's narrowed ranges, AdaRound/GPTQ's weights)

    def metrics(self) -> dict[str, float]:
        out = {**super().metrics()}
        for row in self.rows:
            out[f"accuracy {'+'.join(row.steps) or 'ptq'}"] = row.accuracy
        return out
