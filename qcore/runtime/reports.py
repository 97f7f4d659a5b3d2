"""Typed results of deploy: every path's score against the simulation, latency, and what was chosen."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from qcore.analysis.reports import RunReport

__all__ = ["PathScore", "Int8Graph", "DeployReport"]


@dataclass
class PathScore:
    """One runnable path (FP32, INT8 backend or variant) scored on the evaluation set."""

    kind: str
    size_bytes: int
    agreement_with_simulation: float
    agreement_with_fp32: float
    sqnr_db_vs_simulation: float
    accuracy: float | None = None
    images: int = 0  # how many evaluation images these numbers come from


@dataclass
class Int8Graph:
    """What a real INT8 model's graph holds besides INT8 kernels."""

    transitions: int
    float_ops: list[str]
    ops: dict[str, int]
    notes: list[str]


@dataclass
class DeployReport(RunReport):
    """Real INT8 models built from the calibrated sim: accuracy, agreement, latency, exported files.
    `latency_ms` is {"batch_B": {path: {median_ms, p10_ms, p90_ms, runs}}}."""

    kind: ClassVar[str] = "deploy"
    random_weights: bool
    backend: str | None
    config: dict  # as resolved for this CPU (weight_range "full" or "reduced")
    int8_scheme: str  # the weight range in words, and why
    fp32_accuracy: float | None
    simulation_accuracy: float | None
    int8_accuracy: float | None
    agreement_with_simulation: float | None
    logit_sqnr_db_vs_simulation: float | None
    eval_images: int
    paths: dict[str, PathScore]
    latency_ms: dict[str, dict[str, dict]]
    fastest_fp32: str
    speedup_vs_fastest_fp32: float | None
    speedup_by_path: dict[str, float]
    speedup_vs_fastest_fp32_by_batch: dict[str, float | None]
    best_int8: str | None
    int8_paths: dict[str, Int8Graph]
    size_bytes: dict[str, int]
    macs: int
    threads: int
    iters: int
    machine: dict
    notes: list[str]
    layer_check: dict | None = None  # real INT8 vs simulation per layer, on a few images (runtime.layer_check)
    diagnosis: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    out_dir: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        for batch, paths in self.latency_ms.items():
            out.update({f"{batch} {path} ms": t["median_ms"] for path, t in paths.items()})
        return out
