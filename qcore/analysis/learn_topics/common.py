"""What every Learn topic shares: the verdict type and the rules' thresholds (module constants, so a page can
print the rule it applied)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LATENCY_MARGIN", "LINEAR_HEAVY_SHARE", "ACCURACY_MARGIN", "SMOOTH_GAP", "FP16_MAX", "BF16_MAX", "SMOOTH_ALPHA", "Verdict"]

LATENCY_MARGIN = 0.05  # a path counts as faster when its median is at least 5% lower
LINEAR_HEAVY_SHARE = 0.5  # Linear layers do at least half of the model's multiply-accumulates
ACCURACY_MARGIN = 0.01  # one percentage point of top-1
SMOOTH_GAP = 0.005  # half a point: a smaller A8 loss leaves nothing measurable to recover
FP16_MAX = float(torch.finfo(torch.float16).max)  # 65504
BF16_MAX = float(torch.finfo(torch.bfloat16).max)  # FP32's exponent range
SMOOTH_ALPHA = 0.5  # SmoothQuant's migration strength, the paper's default


@dataclass(frozen=True)
class Verdict:
    """The claim checked on this model: True, False, or None where it does not apply; `reason` a code."""

    holds: bool | None
    reason: str

    @property
    def mark(self) -> str:
        return {True: "✓", False: "✗", None: "–"}[self.holds]


def _faster(a_ms: float, b_ms: float) -> bool:
    """Whether `a` is faster than `b` by LATENCY_MARGIN (a tie within noise is not faster)."""
    return a_ms <= b_ms * (1.0 - LATENCY_MARGIN)
