"""The typed result of a guided workflow run: the target, each step's measured outcome, the final INT8."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from qcore.analysis.reports import RunReport
from qcore.i18n import N_
from qcore.train.qat.report import QATEpochRow
from qcore.workflow.target import Verdict

__all__ = ["STEPS", "SKIP_REASONS", "STEP_TITLES", "MethodScore", "PtqDetail", "TriedSteps", "RecoverDetail",
           "CurvePoint", "LayerRank",
           "PartialDetail", "QatDetail", "StepOutcome", "FinalInt8", "WorkflowReport"]

STEPS = ("ptq", "recover", "partial", "qat")  # the order the workflow walks
# Why a step did not run: the key a skipped StepOutcome carries, and its English text (its `detail`
# fills the fields); translations key on these texts.
SKIP_REASONS = {
    "met": N_("the target is already met by step {by}"),
    "speed": N_("the speed target is out of reach on this CPU: fully quantized INT8 runs {speedup:.2f}x FP32, and "
                "keeping layers in float or fine-tuning cannot make it faster"),
    "qat_off": N_("QAT was switched off"),
    "recovery_off": N_("recovery was switched off"),
    "no_int8": N_("a speed target needs a real INT8 model, and these activation bits have no INT8 kernel"),
}
STEP_TITLES = {"ptq": N_("1. PTQ baseline"), "recover": N_("2. Recover accuracy (CLE, bias correction, AdaRound, GPTQ, BRECQ)"),
               "partial": N_("3. Sensitivity and partial quantization"),
               "qat": N_("4. Quantization-aware training (QAT)"), "final": N_("Real INT8")}


@dataclass(frozen=True)
class MethodScore:
    """Step 1: one calibration method's accuracy and top-1 agreement with FP32."""

    method: str
    accuracy: float
    agreement: float


@dataclass(frozen=True)
class PtqDetail:
    methods: list[MethodScore]
    best_method: str


@dataclass(frozen=True)
class TriedSteps:
    """Step 2: one combination of recovery steps, measured end to end; `kept` marks the ones the search kept."""

    steps: list[str]
    accuracy: float
    agreement: float
    kept: bool
    seconds: float


@dataclass(frozen=True)
class RecoverDetail:
    """Step 2: every combination tried, in order, the steps kept, and step 1's accuracy they started from."""

    tried: list[TriedSteps]
    kept: list[str]
    baseline_accuracy: float


@dataclass(frozen=True)
class CurvePoint:
    """Step 3: the model with these layers in float, its accuracy and real INT8 speed, and the verdict."""

    float_layers: list[str]
    accuracy: float
    int8_ms: float | None
    fp32_ms: float | None
    speedup: float | None
    weight_bytes: int
    verdict: Verdict


@dataclass(frozen=True)
class LayerRank:
    """Step 3: one layer of the sensitivity sweep, most harmful first."""

    layer: str
    only_this: float
    all_but_this: float
    sqnr_db: float


@dataclass(frozen=True)
class PartialDetail:
    curve: list[CurvePoint]
    ranking: list[LayerRank]
    max_float: int


@dataclass(frozen=True)
class QatDetail:
    """Step 4: the recipe and where it came from (a message and its fields), the accuracies around QAT,
    the epochs, and the files written."""

    recipe: dict
    recipe_source: str
    recipe_params: dict
    ptq_accuracy: float
    int8_accuracy: float | None
    ptq_int8_accuracy: float | None
    history: list[QATEpochRow]
    files: list[str]
    notes: list[str]


@dataclass
class StepOutcome:
    """One step: what it chose, its measured accuracy (fake-quant, on the workflow's evaluation images)
    and batch-1 latency (real INT8 in ONNX Runtime vs ONNX Runtime FP32, interleaved), the verdict.
    A step that did not run says why in `skipped` (a key of SKIP_REASONS; `detail` fills its text)."""

    step: str
    ran: bool
    skipped: str = ""
    accuracy: float | None = None
    int8_ms: float | None = None
    fp32_ms: float | None = None
    speedup: float | None = None
    verdict: Verdict | None = None
    config: dict | None = None
    float_layers: list[str] = field(default_factory=list)
    # the step's own table (PtqDetail, RecoverDetail, PartialDetail, QatDetail); for a step that did not run, the fields
    # its reason's text takes (SKIP_REASONS)
    detail: PtqDetail | RecoverDetail | PartialDetail | QatDetail | dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def met(self) -> bool:
        return self.verdict is not None and self.verdict.met


@dataclass
class FinalInt8:
    """The model the workflow ends with, built as real INT8 and measured: its accuracy on the same images,
    its speed against the fastest FP32 runtime, and the files written."""

    source: str  # the step whose model this is
    accuracy: float | None
    simulation_accuracy: float | None
    latency_ms: float | None
    fp32_ms: float | None
    speedup: float | None
    fp32_runtime: str
    int8_runtime: str
    verdict: Verdict | None
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class WorkflowReport(RunReport):
    """PTQ baseline -> recovery -> sensitivity and partial quantization -> QAT, stopping at the first step that meets
    the target; `met_by` names that step (None: none did, and the report says how far each got)."""

    kind: ClassVar[str] = "workflow"
    target: dict
    eval_size: int
    fp32_accuracy: float
    steps: list[StepOutcome]
    final: FinalInt8 | None
    met_by: str | None
    threads: int
    notes: list[str] = field(default_factory=list)
    out_dir: str = ""
    seconds: float = 0.0

    def step(self, name: str) -> StepOutcome:
        return next(s for s in self.steps if s.step == name)

    def metrics(self) -> dict[str, float]:
        out = {"fp32 accuracy": self.fp32_accuracy}
        out.update({f"{s.step} accuracy": s.accuracy for s in self.steps if s.accuracy is not None})
        if self.final and self.final.accuracy is not None:
            out["final INT8 accuracy"] = self.final.accuracy
        if self.final and self.final.speedup is not None:
            out["final INT8 speedup"] = self.final.speedup
        return out
