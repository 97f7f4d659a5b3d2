"""What one calibration pass collects per tensor: exact min/max and a growing histogram.

The histogram lives on a grid anchored at 0: bin k covers [k * width, (k + 1) * width). When a
batch falls outside the covered range, the width doubles (as often as needed) and pairs of old
bins merge exactly into new ones; nothing is re-estimated or interpolated. Every doubling leaves
the data's span over more than half of the `STORE_BINS` bins, so at least 2048 bins always
resolve the data. Because the grid is anchored at 0, folding it gives the exact |x| histogram
that symmetric methods (entropy, symmetric percentile) need.

Range methods in `calibration.py` are pure functions of a `TensorStats`, so the histogram page and
the accuracy table read the very same object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from qcore.quant import fasthist

__all__ = ["STORE_BINS", "TensorStats", "Histogram"]

MAX_MAGNITUDE = 1e30  # beyond this, histogram edges (bins x width) overflow float32
STORE_BINS = 4096


@dataclass
class Histogram:
    """Counts on a zero-anchored grid: bin i covers [(k0 + i) * width, (k0 + i + 1) * width)."""

    counts: torch.Tensor  # float64, len n
    width: float
    k0: int

    @property
    def edges(self) -> torch.Tensor:
        return (torch.arange(len(self.counts) + 1, dtype=torch.float64) + self.k0) * self.width

    @property
    def centers(self) -> torch.Tensor:
        return (torch.arange(len(self.counts), dtype=torch.float64) + self.k0 + 0.5) * self.width

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def trimmed(self) -> "Histogram":
        """The same histogram without empty bins at either end (keeps bin 0's side of zero)."""
        nz = torch.nonzero(self.counts).flatten()
        if len(nz) == 0:
            return self
        lo, hi = int(nz[0]), int(nz[-1]) + 1
        return Histogram(self.counts[lo:hi].clone(), self.width, self.k0 + lo)

    def folded(self) -> "Histogram":
        """Histogram of |x|: bin -k-1 (covering [-(k+1)w, -kw)) lands on bin k."""
        n_pos = max(self.k0 + len(self.counts), 1)
        n_neg = max(-self.k0, 0)
        counts = torch.zeros(max(n_pos, n_neg), dtype=torch.float64)
        k = torch.arange(len(self.counts)) + self.k0
        idx = torch.where(k >= 0, k, -k - 1)
        counts.index_add_(0, idx, self.counts)
        return Histogram(counts, self.width, 0)


@dataclass
class TensorStats:
    """Statistics of one tensor over a calibration pass: min, max, count and histogram."""

    name: str = ""
    min: float = math.inf
    max: float = -math.inf
    count: int = 0
    nonfinite: int = 0
    width: float = 0.0
    k0: int = 0
    counts: torch.Tensor = field(default_factory=lambda: torch.zeros(STORE_BINS, dtype=torch.float64))

    def update(self, x: torch.Tensor) -> None:
        """Add one batch. NaN/inf are counted apart and kept out of the histogram."""
        x = x.detach().float().flatten()
        if x.numel() == 0:
            return
        lo, hi = torch.aminmax(x)
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN propagates, inf shows: rare path
            finite = torch.isfinite(x)
            self.nonfinite += int((~finite).sum())
            x = x[finite]
            if x.numel() == 0:
                return
            lo, hi = torch.aminmax(x)
            lo, hi = float(lo), float(hi)
        if max(-lo, hi) > MAX_MAGNITUDE:
            raise FloatingPointError(
                f"activations at {self.name} reach {lo if -lo > hi else hi:.3g}: values this large overflow float32 "
                "arithmetic and cannot be quantized meaningfully (check the model's weights and input scaling)")
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += x.numel()
        self._cover(self.min, self.max)
        self.counts += fasthist.counts(x, self.width, self.k0, STORE_BINS)

    def _cover(self, lo: float, hi: float) -> None:
        """Make the grid cover [min(lo, 0), max(hi, 0)], doubling the bin width as needed."""
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if self.width == 0.0:
            span = max(hi - lo, 1e-8)
            # A power-of-two width keeps later doublings exact in floating point.
            self.width = 2.0 ** math.ceil(math.log2(span * 1.0001 / (STORE_BINS - 2)))
            self.k0 = math.floor(lo / self.width)
            return
        factor = 1
        while math.floor(hi / (self.width * factor)) - math.floor(lo / (self.width * factor)) >= STORE_BINS:
            factor *= 2
        width = self.width * factor
        k_lo, k_hi = math.floor(lo / width), math.floor(hi / width)
        k0 = math.floor(self.k0 / factor)
        if k_lo < k0 or k_hi >= k0 + STORE_BINS:
            k0 = k_lo
        if factor != 1 or k0 != self.k0:
            self._regrid(factor, k0)

    def _regrid(self, factor: int, k0: int) -> None:
        """Move counts to a grid `factor` times wider starting at bin k0; old bin k -> k // factor.

        Exact: the new edges are a subset of the old ones, and the caller guarantees every
        non-empty old bin lands inside the new window.
        """
        k = torch.arange(STORE_BINS) + self.k0
        new_idx = torch.div(k, factor, rounding_mode="floor") - k0
        keep = self.counts > 0
        regridded = torch.zeros(STORE_BINS, dtype=torch.float64)
        regridded.index_add_(0, new_idx[keep], self.counts[keep])
        self.counts, self.k0, self.width = regridded, k0, self.width * factor

    def histogram(self) -> Histogram:
        """The collected histogram, trimmed to the bins that hold data."""
        if self.count == 0:
            raise ValueError(f"no values were collected for {self.name or 'this tensor'}")
        return Histogram(self.counts.clone(), self.width, self.k0).trimmed()

    @property
    def absmax(self) -> float:
        return max(abs(self.min), abs(self.max))

    def to_dict(self) -> dict:
        h = self.histogram()
        return {
            "name": self.name, "min": self.min, "max": self.max, "count": self.count,
            "nonfinite": self.nonfinite, "width": h.width, "k0": h.k0, "counts": h.counts.tolist(),
        }
