"""Range (clip) methods: pure functions of one tensor's `TensorStats` and a `QScheme`.

- `max`: the observed [min, max]; nothing is clipped, rounding error is largest.
- `percentile:P`: the P-th percentile of |x| (symmetric) or the (100-P)-th and P-th (asymmetric).
- `entropy`: TensorRT's KL-divergence search: the threshold whose quantized distribution loses
  the least information relative to the original. On |x| with half the grid's levels where the grid
  (symmetric) or the data (values on both sides of zero) is two-sided, as TensorRT and ONNX Runtime
  search; from the data's minimum upwards with all levels where the data starts there (after ReLU,
  or piled up at its minimum, like an image's background). Candidates start at 1/16 of the range
  (TensorRT's 128 of 2048 bins), never at a handful of bins: at 4 bits a search that may stop after
  16 bins finds a near-flat stretch of tail whose KL is small and clips everything else (the collapse
  to chance of issue 23). Below `ENTROPY_MIN_BITS` the search is refused: with one or two levels per
  side the quantized histogram is a flat block and KL no longer measures quantization loss, so `mse`
  is used instead and the result says so (`RangeResult.note`).
- `mse`: the clip, scaled down from max, that minimises clipping plus rounding error.

Each returns a `RangeResult` with the clip range, the scale and zero-point it implies, and the
estimated expected squared error per element split into a clipping part (values beyond the
representable range) and a rounding part (step^2 / 12 for values inside it), both computed from
the same histogram the app draws.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from qcore.quant.qparams import QScheme, compute_qparams
from qcore.quant.stats import Histogram, TensorStats

__all__ = ["METHODS", "DEFAULT_METHODS", "RangeResult", "parse_method", "refusal", "quant_error", "candidate_errors",
           "compute_range", "compute_ranges", "fixed_range", "FIXED"]

METHODS = ("max", "percentile", "entropy", "mse")
# The methods every comparison offers, in the order they are shown: the one list the CLI, pages and benchmarks use.
DEFAULT_METHODS = ("max", "percentile:99.99", "entropy", "mse")
DEFAULT_PERCENTILE = 99.99
ENTROPY_MAX_BINS = 2048
ENTROPY_MAX_CANDIDATES = 512
ENTROPY_START = 1 / 16  # the smallest candidate threshold, as a share of the bins: TensorRT's start_bin 128 of 2048
ENTROPY_MIN_BITS = 3  # below this (counting reduce_range), entropy is refused and mse used
FALLBACK = {"entropy": "mse"}  # the nearest method: it also trades clipping against rounding error, by estimate
MSE_CANDIDATES = 100
FIXED = "fixed"  # the method label of a range given by hand (LayerConfig.act_clip), not computed


@dataclass(frozen=True)
class RangeResult:
    """One method's answer for one tensor. Errors are expected squared errors per element."""

    method: str
    clip_min: float
    clip_max: float
    scale: float
    zero_point: int
    clip_error: float
    rounding_error: float
    note: str = ""  # why `method` is not the method asked for (a refused method's reason), else empty

    @property
    def total_error(self) -> float:
        return self.clip_error + self.rounding_error

    def to_dict(self) -> dict:
        return {**asdict(self), "total_error": self.total_error}


def parse_method(spec: str) -> tuple[str, float | None]:
    """'max' -> ('max', None); 'percentile:99.9' -> ('percentile', 99.9)."""
    name, _, arg = spec.strip().partition(":")
    if name not in METHODS:
        raise ValueError(f"unknown calibration method {spec!r}; choose from {', '.join(METHODS)}")
    if name == "percentile":
        p = float(arg) if arg else DEFAULT_PERCENTILE
        if not 50.0 < p <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], not {p}")
        return name, p
    if arg:
        raise ValueError(f"method {name!r} takes no argument")
    return name, None


def refusal(method: str, scheme: QScheme) -> str | None:
    """Why `method` cannot give a meaningful range on this grid (None: it can). Only entropy refuses: the
    KL search compares the histogram with its quantized copy, and with 2 levels per side (2 bits, or 3 with
    reduce_range) that copy is one flat block per side, so the divergence measures where the mass ends,
    not what quantization loses."""
    name, _ = parse_method(method)
    bits = (scheme.qmax - scheme.qmin + 1).bit_length() - 1
    if name == "entropy" and bits < ENTROPY_MIN_BITS:
        return (f"entropy needs at least {ENTROPY_MIN_BITS}-bit activations: with {2 ** bits} levels the KL search "
                f"compares the histogram with a flat block and says nothing about quantization loss; "
                f"{FALLBACK[name]} was used instead")
    return None


def _representable(scale: torch.Tensor, zero_point: torch.Tensor, scheme: QScheme) -> tuple[torch.Tensor, torch.Tensor]:
    zp = zero_point.to(torch.float64)
    s = scale.to(torch.float64)
    return (scheme.qmin - zp) * s, (scheme.qmax - zp) * s


def candidate_errors(hist: Histogram, clip_min: torch.Tensor, clip_max: torch.Tensor, scheme: QScheme):
    """Clipping and rounding error for a batch of candidate ranges (1-D tensors)."""
    scale, zp = compute_qparams(clip_min, clip_max, scheme)
    lo, hi = _representable(scale, zp, scheme)
    centers = hist.centers[None, :]
    counts = hist.counts[None, :]
    total = max(hist.total, 1.0)
    clipped = torch.clamp(centers, lo[:, None], hi[:, None])
    clip_err = (counts * (centers - clipped) ** 2).sum(1) / total
    inside = ((centers >= lo[:, None]) & (centers <= hi[:, None])).to(torch.float64)
    round_err = (counts * inside).sum(1) / total * scale.to(torch.float64) ** 2 / 12.0
    return clip_err, round_err, scale, zp


def quant_error(stats: TensorStats, clip_min: float, clip_max: float, scheme: QScheme) -> tuple[float, float]:
    """(clipping error, rounding error) of quantizing the collected values with this clip range."""
    c, r, _, _ = candidate_errors(stats.histogram(), torch.tensor([clip_min]), torch.tensor([clip_max]), scheme)
    return float(c[0]), float(r[0])


def _result(method: str, stats: TensorStats, lo: float, hi: float, scheme: QScheme) -> RangeResult:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if scheme.symmetric:
        t = max(-lo, hi)
        lo, hi = (-t, t) if scheme.signed or stats.min < 0 else (0.0, t)
    c, r, scale, zp = candidate_errors(stats.histogram(), torch.tensor([lo]), torch.tensor([hi]), scheme)
    return RangeResult(method, float(lo), float(hi), float(scale[0]), int(zp[0]), float(c[0]), float(r[0]))


def _quantile(hist: Histogram, q: float) -> float:
    """The q-quantile (0..1) of the histogram, interpolating linearly inside the bin."""
    cum = torch.cumsum(hist.counts, 0)
    target = q * float(cum[-1])
    i = int(torch.searchsorted(cum, torch.tensor([target], dtype=torch.float64))[0])
    i = min(i, len(cum) - 1)
    before = float(cum[i - 1]) if i > 0 else 0.0
    inside = float(hist.counts[i])
    frac = (target - before) / inside if inside > 0 else 0.0
    return (hist.k0 + i + frac) * hist.width


def _percentile(stats: TensorStats, p: float, scheme: QScheme) -> tuple[float, float]:
    hist = stats.histogram()
    if scheme.symmetric:
        t = min(_quantile(hist.folded().trimmed(), p / 100.0), stats.absmax)
        return -t, t
    lo = max(_quantile(hist, 1.0 - p / 100.0), stats.min)
    hi = min(_quantile(hist, p / 100.0), stats.max)
    return lo, hi


def _kl_threshold_bins(hist: np.ndarray, levels: int) -> int:
    """TensorRT's search: the number of |x| bins to keep whose `levels`-level quantization has
    the least KL divergence from the reference (outliers folded into the last kept bin). The
    candidates start at ENTROPY_START of the bins (and at least `levels`), as TensorRT's do."""
    n = len(hist)
    start = max(levels, int(np.ceil(n * ENTROPY_START)))
    if n <= start:
        return n
    candidates = np.unique(np.linspace(start, n, min(ENTROPY_MAX_CANDIDATES, n - start + 1)).round().astype(int))
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    best_i, best_kl = n, np.inf
    for i in candidates:
        ref = hist[:i].copy()
        ref[i - 1] += tail[i]
        kept = hist[:i]
        chunk = (np.arange(i) * levels) // i
        sums = np.bincount(chunk, weights=kept, minlength=levels)
        nonzero = kept > 0
        nz = np.bincount(chunk, weights=nonzero.astype(np.float64), minlength=levels)
        q = np.where(nonzero, sums[chunk] / np.maximum(nz[chunk], 1), 0.0)
        p_sum, q_sum = ref.sum(), q.sum()
        if p_sum == 0 or q_sum == 0:
            continue
        p_n, q_n = ref / p_sum, q / q_sum
        mask = p_n > 0
        kl = float(np.sum(p_n[mask] * np.log(p_n[mask] / np.maximum(q_n[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, int(i)
    return best_i


def _merged(counts: np.ndarray) -> tuple[np.ndarray, int]:
    """Merge bin pairs until at most ENTROPY_MAX_BINS remain (exact on the grid); returns the factor."""
    factor = 1
    while len(counts) > ENTROPY_MAX_BINS:
        counts = np.add.reduceat(counts, np.arange(0, len(counts), 2))
        factor *= 2
    return counts, factor


def _flatten_first(counts: np.ndarray) -> np.ndarray:
    """The first bin holds every value piled up at the low end (exact zeros after ReLU, the background
    of normalized images) and dwarfs the rest; the KL search would then favour tiny thresholds.
    Like NVIDIA's pytorch-quantization, give it its neighbour's count."""
    counts = counts.copy()
    if len(counts) > 1:
        counts[0] = counts[1]
    return counts


def _starts_at_minimum(stats: TensorStats, counts: np.ndarray) -> bool:
    """Whether the data starts at its minimum rather than spreading around zero: nothing below zero
    (after ReLU), or its lowest bin is its fullest (a pile-up: an image's background, a clamp)."""
    return stats.min >= 0 or counts[0] >= counts.max()


def _entropy(stats: TensorStats, scheme: QScheme) -> tuple[float, float]:
    hist = stats.histogram()
    levels = scheme.qmax - scheme.qmin + 1
    raw = hist.counts.numpy()
    if scheme.symmetric or not _starts_at_minimum(stats, raw):
        # On |x|, as TensorRT and ONNX Runtime search: half the levels lie on each side of zero (all of
        # them where both the grid and the data are one-sided).
        folded = hist.folded().trimmed()
        counts, factor = _merged(np.concatenate([np.zeros(folded.k0), folded.counts.numpy()]))
        one_sided = stats.min >= 0 and not scheme.signed
        t = _kl_threshold_bins(_flatten_first(counts), levels if one_sided else levels // 2) * folded.width * factor
        t = min(t, stats.absmax)
        return max(stats.min, -t), min(stats.max, t)
    # An asymmetric grid on data that starts at its minimum: search the upper threshold over the distance
    # from it with all the levels (after ReLU the minimum is 0: the usual one-sided search).
    counts, factor = _merged(raw)
    t = float(hist.edges[0]) + _kl_threshold_bins(_flatten_first(counts), levels) * hist.width * factor
    return stats.min, min(stats.max, t)


def _mse(stats: TensorStats, scheme: QScheme) -> tuple[float, float]:
    hist = stats.histogram()
    lo0, hi0 = min(stats.min, 0.0), max(stats.max, 0.0)
    alphas = torch.linspace(1.0 / MSE_CANDIDATES, 1.0, MSE_CANDIDATES, dtype=torch.float64)
    c, r, _, _ = candidate_errors(hist, (alphas * lo0).float(), (alphas * hi0).float(), scheme)
    best = int(torch.argmin(c + r))
    return float(alphas[best] * lo0), float(alphas[best] * hi0)


def compute_range(stats: TensorStats, method: str, scheme: QScheme) -> RangeResult:
    """The clip range `method` (e.g. 'percentile:99.99') chooses for these statistics. A method refused on
    this grid (`refusal`) gives its fallback's range, labelled with the fallback and the reason."""
    name, arg = parse_method(method)
    if stats.count == 0:
        raise ValueError(f"no calibration values were collected for {stats.name or 'this tensor'}")
    note = refusal(method, scheme)
    if note:
        name = FALLBACK[name]
    if name == "max":
        lo, hi = stats.min, stats.max
    elif name == "percentile":
        lo, hi = _percentile(stats, arg, scheme)
    elif name == "entropy":
        lo, hi = _entropy(stats, scheme)
    else:
        lo, hi = _mse(stats, scheme)
    label = f"percentile:{arg:g}" if name == "percentile" else name
    return replace(_result(label, stats, lo, hi, scheme), note=note or "")


def fixed_range(stats: TensorStats, clip_min: float, clip_max: float, scheme: QScheme) -> RangeResult:
    """A range given by hand (the what-if editor, LayerConfig.act_clip), widened to hold zero as every grid
    does (and made symmetric on a symmetric grid), with the errors these statistics give it."""
    return _result(FIXED, stats, clip_min, clip_max, scheme)


def compute_ranges(stats: dict[str, TensorStats], method: str, scheme: QScheme) -> dict[str, RangeResult]:
    """`compute_range` for every tensor of a calibration pass."""
    return {name: compute_range(s, method, scheme) for name, s in stats.items()}
