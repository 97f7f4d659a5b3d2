"""The typed result of a QAT run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

from qcore.analysis.reports import RunReport

__all__ = ["QATEpochRow", "QATStepRow", "QATReport"]


@dataclass(frozen=True)
class QATEpochRow:
    """One evaluation round (epoch 0: PTQ, before fine-tuning): the simulation's accuracy on the monitor
    images, FP32 and PTQ beside it, and the real INT8 model built at that point (when one was)."""

    kind: ClassVar[str] = "epoch"
    epoch: int
    step: int
    fake_quant_accuracy: float
    fp32_accuracy: float
    ptq_accuracy: float
    int8_accuracy: float | None = None
    int8_latency_ms: float | None = None
    fp32_ort_latency_ms: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QATStepRow:
    """The training loss averaged over the steps since the last row, and the learning rate then."""

    kind: ClassVar[str] = "step"
    step: int
    loss: float
    lr: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QATReport(RunReport):
    """FP32 / PTQ / QAT (fake-quant and real INT8) on the final evaluation set, the curves per epoch
    (`history`) and per logged step (`losses`), measured latency and sizes, and the files written."""

    kind: ClassVar[str] = "qat"
    config: dict
    recipe: dict
    fp32_accuracy: float
    ptq_accuracy: float
    qat_accuracy: float
    int8_accuracy: float | None
    ptq_int8_accuracy: float | None
    eval_images: int
    latency_ms: dict[str, float]
    size_bytes: dict[str, int]
    seconds: float
    total_seconds: float
    step_overhead_vs_fp32: float
    step_times: dict
    steps: int
    monitor_images: int
    history: list[QATEpochRow]
    losses: list[QATStepRow]
    threads: int
    # what ran the fine-tune: {"engine": "local"|"torch.distributed", "world": N, "device", "backend"}
    distributed: dict = field(default_factory=lambda: {"engine": "local", "world": 1, "device": "cpu"})
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    out_dir: str = ""
