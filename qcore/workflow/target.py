"""What the user wants from quantization, and the check of a measured result against it.

The Workflow page and `python -m qcore workflow` stop at the first step whose measured numbers meet
the target, so the check is one function of numbers, tested on its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Target", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """Whether a measured result meets the target, and each part of the judgement in numbers."""

    met: bool
    accuracy_ok: bool | None  # None: the target sets no accuracy bound
    speed_ok: bool | None  # None: no speed bound, or no speed measured
    drop: float  # FP32 accuracy minus this result's, as a fraction
    speedup: float | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """`max_drop`: the largest accuracy loss vs FP32 allowed (0.01 = 1 point); `min_speedup`: real INT8
    at batch 1 at least this many times faster than FP32. Either may be None, not both."""

    max_drop: float | None = 0.01
    min_speedup: float | None = None

    def __post_init__(self):
        if self.max_drop is None and self.min_speedup is None:
            raise ValueError("set an accuracy target, a speed target, or both")
        if self.max_drop is not None and not 0 <= self.max_drop < 1:
            raise ValueError("the accuracy target is a drop between 0 and 100 points")
        if self.min_speedup is not None and not 0 < self.min_speedup <= 100:
            raise ValueError("the speed target is a factor between 0 and 100 (e.g. 2 for 2x faster)")

    def judge(self, accuracy: float, fp32_accuracy: float, speedup: float | None) -> Verdict:
        """The verdict for one measured result: both set bounds must hold (a speed bound with no speed
        measured does not hold)."""
        drop = fp32_accuracy - accuracy
        acc_ok = None if self.max_drop is None else drop <= self.max_drop + 1e-12
        speed_ok = None if self.min_speedup is None else (speedup is not None and speedup >= self.min_speedup)
        met = acc_ok is not False and speed_ok is not False
        return Verdict(met, acc_ok, speed_ok, round(drop, 6), None if speedup is None else round(speedup, 3))

    def describe(self) -> str:
        parts = []
        if self.max_drop is not None:
            parts.append(f"accuracy within {self.max_drop * 100:g} pt of FP32")
        if self.min_speedup is not None:
            parts.append(f"INT8 at least {self.min_speedup:g}x faster than FP32 (batch 1)")
        return " and ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)
