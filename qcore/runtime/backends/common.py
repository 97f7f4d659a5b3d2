"""What every backend returns: a named callable model plus what it is made of."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

__all__ = ["Runner"]


@dataclass
class Runner:
    """One executable variant of the model (FP32 eager, ORT INT8, ...).

    `run` maps a float batch to float logits. `size_bytes` is the serialized model's size on
    disk; `ops` counts the operator types it executes; `float_ops` lists the compute ops that
    stay in float; `transitions` counts quantize/dequantize ops left between INT8 and float.
    """

    name: str
    kind: str  # "fp32", "int8", "dynamic", "fp16", "bf16"
    run: Callable[[torch.Tensor], torch.Tensor]
    size_bytes: int = 0
    path: Path | None = None
    ops: dict[str, int] = field(default_factory=dict)
    float_ops: list[str] = field(default_factory=list)
    transitions: int = 0
    notes: list[str] = field(default_factory=list)
    artifact: object = None  # the backend's own model object, for export (e.g. a TorchScript module)
    # Compiled for each batch size on first use (TorchScript): a new batch size costs a trace and slow first
    # calls, so an evaluation feeds it the batch size it was timed at (deploy's scoring).
    shape_specialized: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)
