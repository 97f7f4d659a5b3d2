"""How to fine-tune: the QAT recipe as plain, validated data."""

from __future__ import annotations

from dataclasses import dataclass

from qcore.quant.quantsim import RangeMode
from qcore.zoo.models import LoadedModel

__all__ = ["RANGE_MODES", "QATRecipe", "default_lr"]

RANGE_MODES = tuple(m.value for m in RangeMode)  # "fixed", "observe", "learn"
DEFAULT_LR = 1e-5  # when the model does not record its training rate: ~1% of Adam's usual 1e-3


@dataclass(frozen=True)
class QATRecipe:
    """How to fine-tune. Give `steps`, or `minutes` (then the steps that fit are worked out from a
    measured step time and the measured cost of one evaluation round)."""

    steps: int | None = None
    minutes: float | None = 2.0
    epochs: int = 3  # evaluation rounds the steps are split into
    batch_size: int = 64
    lr: float | None = None  # None: lr_fraction of the model's original training rate
    lr_fraction: float = 0.01
    weight_decay: float = 0.0
    label_smoothing: float = 0.05  # the loss the built-ins were trained with
    range_mode: str = "fixed"
    freeze_after: int = 50  # "observe": steps during which ranges follow the training batches
    bn_freeze_after: int = 0  # steps during which BN statistics train (0: BN folded and frozen from the start)
    train_size: int | None = None  # None: the whole train split
    augment: bool = True
    int8_each_epoch: bool = True
    latency_iters: int = 20
    log_every: int = 5

    def __post_init__(self):
        if (self.steps is None) == (self.minutes is None):
            raise ValueError("give either steps or minutes for the QAT run")
        if self.steps is not None and self.steps < 1:
            raise ValueError("steps must be at least 1")
        if self.minutes is not None and not 0 < self.minutes <= 120:
            raise ValueError("minutes must be between 0 and 120")
        if not 1 <= self.epochs <= 50:
            raise ValueError("epochs must be between 1 and 50")
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if self.lr is not None and not 0 < self.lr < 1:
            raise ValueError("the learning rate must be between 0 and 1")
        if self.range_mode not in RANGE_MODES:
            raise ValueError(f"range_mode must be one of {', '.join(RANGE_MODES)}, not {self.range_mode!r}")
        if self.freeze_after < 0 or self.bn_freeze_after < 0:
            raise ValueError("freeze_after and bn_freeze_after must be 0 or more")

    @property
    def mode(self) -> RangeMode:
        return RangeMode(self.range_mode)

    def total_steps(self, step_s: float, round_s: float) -> int:
        """`steps`, or what fits in `minutes`: the budget less one evaluation round per epoch."""
        if self.steps is not None:
            return self.steps
        return max(self.epochs, int((self.minutes * 60 - self.epochs * round_s) / step_s))

    def epoch_bounds(self, total: int) -> list[int]:
        """The steps after which an evaluation round runs (the last one is `total`)."""
        return sorted({max(1, round(total * (e + 1) / self.epochs)) for e in range(self.epochs)})


def default_lr(loaded: LoadedModel, fraction: float = 0.01) -> float:
    """`fraction` of the learning rate the model was trained with, when its checkpoint records it."""
    lr = loaded.info.get("lr")
    return float(lr) * fraction if isinstance(lr, (int, float)) and lr > 0 else DEFAULT_LR
