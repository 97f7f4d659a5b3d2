"""Which device training runs on. Its own module because both the QAT loop and the process launcher
(qcore.train.ddp) need it, and the launcher must not import the QAT package that launches it."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str) -> str:
    """"auto": the CUDA GPU when there is one, else the CPU; "cuda" without one is refused."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible here (use cpu or auto)")
    return device
