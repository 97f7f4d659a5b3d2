"""The cause detectors of the diagnosis: each a pure function of one layer's measured statistics (the calibration
histogram, the folded weight, the applied range) that returns a `Cause` when the numbers say it hurts, else None.

Every cause carries what was measured (`Evidence`), a concrete `Fix` (per-layer `LayerConfig` overrides, or a
recovery step) and `severity_db`: how many dB of quantization noise the fix removes at the tensor the cause sits
on, estimated from the same histogram or weight (so causes of different layers rank on one scale). The estimate
only ranks; `qcore.analysis.diagnosis.apply_fix` measures what a fix really does to accuracy.

Thresholds are module constants so that the page and the README can state the rule each detector applies.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

from qcore.analysis.layers import channel_spread
from qcore.quant.calibration import RangeResult, compute_range
from qcore.quant.fakequant import fake_quantize_scheme
from qcore.quant.qconfig import LayerConfig, QuantConfig, RecoveryStep
from qcore.quant.progress import Msg
from qcore.quant.qparams import QScheme, compute_qparams, minmax
from qcore.quant.stats import Histogram, TensorStats

__all__ = ["CAUSE_KINDS", "CAUSE_TITLES", "LEARN_TOPICS", "Z_THRESHOLD", "SPREAD_THRESHOLD", "SPREAD_MIN_GAIN_DB", "NEG_MIN_FRACTION",
           "ADD_RATIO_THRESHOLD", "BITS_SQNR_DB", "MIN_GAIN_DB", "HEALTHY_SQNR_DB", "Evidence", "Fix", "Cause", "HistogramData",
           "histogram_moments", "outlier_cause", "spread_cause", "negative_clip_cause", "add_scale_cause",
           "act_bits_cause", "weight_bits_cause", "weight_sqnr_db"]

CAUSE_KINDS = ("outliers", "channel_spread", "negative_clipped", "add_scales", "too_few_bits")
CAUSE_TITLES = {
    "outliers": Msg("activation outliers"),
    "channel_spread": Msg("unequal weight channels"),
    "negative_clipped": Msg("negative values clipped"),
    "add_scales": Msg("residual add of unequal scales"),
    "too_few_bits": Msg("too few bits for the range"),
}
# The Learn page section each cause links to: topic id -> its section title there (the same msgid the page shows).
LEARN_TOPICS = {
    "symmetric": Msg("2. Symmetric vs asymmetric, on a real activation"),
    "granularity": Msg("3. Per-tensor, per-channel, per-group weights"),
    "clipping": Msg("4. Clipping vs rounding"),
    "lowbit": Msg("8. Four-bit formats: INT4, NF4, FP4"),
    "mobilenet": Msg("11. Why MobileNet suffers under per-tensor weights"),
}
Z_THRESHOLD = 12.0  # the extreme value this many standard deviations from the mean: an outlier for the range
SPREAD_THRESHOLD = 5.0  # widest output channel over the median one, under one per-tensor weight scale
SPREAD_MIN_GAIN_DB = 3.0  # and per-channel scales raise the weight's SQNR by at least this much
NEG_MIN_FRACTION = 1e-3  # share of values below zero that a non-negative grid clips
ADD_RATIO_THRESHOLD = 8.0  # one input of a residual add spans this many times the other's range
BITS_SQNR_DB = 20.0  # the best clip range at this width still leaves the tensor below this SQNR, rounding dominant
HEALTHY_SQNR_DB = 30.0  # a layer side whose own output SQNR (measured) is this high loses nothing worth a cause
MIN_GAIN_DB = 1.0  # a fix that removes less noise than this (estimated) is not worth naming


@dataclass(frozen=True)
class Evidence:
    """One measured number behind a cause: what it is (a Msg: English text that is also its catalog msgid, so pages and the CLI show it translated) and its value."""

    name: str
    value: float


@dataclass(frozen=True)
class Fix:
    """A concrete change of the QuantConfig: `changes` (LayerConfig field, value) on each of `layers`, or a
    recovery step added to the config's steps."""

    layers: tuple[str, ...] = ()
    changes: tuple[tuple[str, object], ...] = ()
    recovery: str = ""

    def apply(self, config: QuantConfig) -> QuantConfig:
        """`config` with this fix: the per-layer overrides written into `config.layers`, or the step appended."""
        if self.recovery:
            if any(s.name == self.recovery for s in config.recovery):
                return config
            return replace(config, recovery=(*config.recovery, RecoveryStep(self.recovery)))
        for name in self.layers:
            config = config.with_layer(name, **dict(self.changes))
        return config

    def describe(self) -> str:
        """The change in config terms: 'layers.3.conv: act_method=mse', or 'recovery: cle'."""
        if self.recovery:
            return f"recovery: {self.recovery}"
        what = ", ".join(f"{k}={v}" for k, v in self.changes)
        return "; ".join(f"{name}: {what}" for name in self.layers)

    def to_dict(self) -> dict:
        return {"layers": list(self.layers), "changes": dict(self.changes), "recovery": self.recovery,
                "describe": self.describe()}


@dataclass(frozen=True)
class HistogramData:
    """A calibration histogram for display: bin edges and counts (at most a few hundred bins), and the clip
    ranges to draw on it: method -> (clip_min, clip_max), the layer's method now and the fix's."""

    edges: list[float]
    counts: list[float]
    ranges: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class Cause:
    """One reason a layer loses accuracy, with its measured evidence, the fix and the Learn topic it links to."""

    kind: str  # one of CAUSE_KINDS
    layer: str
    side: str  # "weights" or "activations": which quantizer of the layer the cause sits on
    severity_db: float  # estimated noise the fix removes at this tensor (dB); ranks causes, measured by apply_fix
    evidence: tuple[Evidence, ...]
    fix: Fix
    learn_topic: str  # a key of LEARN_TOPICS
    histogram: HistogramData | None = None  # the activation's calibration histogram (outliers)
    # the layer's output SQNR (dB) with only this side of it quantized, measured by the diagnosis (which ranks by it)
    layer_sqnr_db: float | None = None

    @property
    def title(self) -> str:
        return CAUSE_TITLES[self.kind]

    def value(self, name: str) -> float:
        return next(e.value for e in self.evidence if e.name == name)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "title": self.title, "layer": self.layer, "side": self.side, "severity_db": self.severity_db,
                "layer_sqnr_db": self.layer_sqnr_db,
                "evidence": {e.name: e.value for e in self.evidence}, "fix": self.fix.to_dict(),
                "learn_topic": self.learn_topic,
                "histogram": None if self.histogram is None else asdict(self.histogram)}


def _db(ratio: float) -> float:
    return 10.0 * math.log10(ratio) if ratio > 0 and math.isfinite(ratio) else (math.inf if ratio > 0 else -math.inf)


def histogram_moments(h: Histogram) -> tuple[float, float, float]:
    """(mean, standard deviation, mean square) of the collected values, from their histogram's bin centres."""
    c, n = h.centers, h.counts
    total = max(float(n.sum()), 1.0)
    mean = float((c * n).sum()) / total
    square = float((c * c * n).sum()) / total
    return mean, math.sqrt(max(square - mean * mean, 0.0)), square


def _display(h: Histogram, ranges: list[RangeResult], max_bars: int = 256) -> HistogramData:
    factor = max(1, math.ceil(len(h.counts) / max_bars))
    pad = (-len(h.counts)) % factor
    counts = torch.cat([h.counts, torch.zeros(pad, dtype=h.counts.dtype)]).reshape(-1, factor).sum(1)
    edges = (torch.arange(len(counts) + 1, dtype=torch.float64) * factor + h.k0) * h.width
    return HistogramData([round(float(e), 8) for e in edges], [float(c) for c in counts],
                         {r.method: (r.clip_min, r.clip_max) for r in ranges})


def _ev(**values: float) -> tuple[Evidence, ...]:
    return tuple(Evidence(name, float(v)) for name, v in values.items())


EVIDENCE = {  # evidence names (Msg texts), by the keyword the detectors below use
    "z": Msg("z-score of the extreme value"), "extreme": Msg("extreme value"), "mean": Msg("mean"), "std": Msg("std"),
    "err_now": Msg("error now (mean square)"), "err_fix": Msg("error with the fix (mean square)"),
    "spread": Msg("widest / median channel range"), "sqnr_now": Msg("SQNR now (dB)"), "wsqnr_now": Msg("median channel SQNR now (dB)"),
    "sqnr_fix": Msg("SQNR with the fix (dB)"),
    "wsqnr_fix": Msg("median channel SQNR with the fix (dB)"), "neg": Msg("share of values below zero"),
    "clipped": Msg("share clipped to zero"), "grid_min": Msg("lowest grid value"), "data_min": Msg("lowest value"),
    "ratio": Msg("input range ratio"), "wide": Msg("wider input |max|"), "narrow": Msg("narrower input |max|"),
    "bits": Msg("bits"), "rounding": Msg("rounding error"), "clip": Msg("clipping error"),
}


def _named(**values: float) -> tuple[Evidence, ...]:
    return _ev(**{EVIDENCE[k]: v for k, v in values.items()})


def outlier_cause(name: str, stats: TensorStats, scheme: QScheme, method: str) -> Cause | None:
    """A few values far from the rest stretch the range (z-score of the extreme value over the histogram's spread),
    and a clipping method (percentile or mse, the better by the histogram's own error estimate) would cut them."""
    h = stats.histogram()
    mean, std, _ = histogram_moments(h)
    extreme = stats.max if abs(stats.max - mean) >= abs(stats.min - mean) else stats.min
    z = abs(extreme - mean) / std if std > 0 else 0.0
    if z < Z_THRESHOLD:
        return None
    now = compute_range(stats, method, scheme)
    best = min((compute_range(stats, m, scheme) for m in ("percentile:99.99", "mse")), key=lambda r: r.total_error)
    gain = _db(now.total_error / best.total_error) if best.total_error > 0 else 0.0
    if best.method == now.method or gain < MIN_GAIN_DB:
        return None
    return Cause("outliers", name, "activations", gain, _named(z=z, extreme=extreme, mean=mean, std=std, err_now=now.total_error,
                                                 err_fix=best.total_error),
                 Fix((name,), (("act_method", best.method),)), "clipping", _display(h, [now, best]))


def weight_sqnr_db(w: torch.Tensor, scheme: QScheme) -> float:
    """SQNR (dB) of a weight quantized with `scheme` (its own min/max grid), for the median output channel: each
    output channel makes its own feature map, and the whole tensor's SQNR would hide narrow channels crushed to a
    few levels behind the energy of one wide channel."""
    scale, zp = compute_qparams(*minmax(w, scheme), scheme)
    wq = fake_quantize_scheme(w, scale, zp, scheme)
    signal = (w.double() ** 2).reshape(w.shape[0], -1).sum(1)
    noise = ((w.double() - wq.double()) ** 2).reshape(w.shape[0], -1).sum(1)
    ratios = [float(a / b) if b > 0 else math.inf for a, b in zip(signal, noise)]
    return _db(float(torch.tensor(ratios, dtype=torch.float64).median()))


def spread_cause(name: str, w: torch.Tensor, cfg: LayerConfig, depthwise: bool) -> Cause | None:
    """Output channels of very different ranges under one per-tensor scale: the narrow ones get few levels.
    Per-channel scales fix it (measured: the weight's SQNR per tensor and per channel at the layer's bits)."""
    if not cfg.quantizes_weight or cfg.weight_dtype != "int" or cfg.weight_granularity != "tensor":
        return None
    flat = w.detach().reshape(w.shape[0], -1)
    spread = channel_spread(flat.min(1).values.tolist(), flat.max(1).values.tolist())
    if spread < SPREAD_THRESHOLD:
        return None
    scheme = cfg.weight_scheme()
    now = weight_sqnr_db(w.detach(), scheme)
    fixed = weight_sqnr_db(w.detach(), replace(scheme, granularity="channel", axis=0))
    if fixed - now < SPREAD_MIN_GAIN_DB:
        return None
    return Cause("channel_spread", name, "weights", fixed - now, _named(spread=spread, wsqnr_now=now, wsqnr_fix=fixed),
                 Fix((name,), (("weight_granularity", "channel"),)), "mobilenet" if depthwise else "granularity")


def _grid(r: RangeResult, scheme: QScheme) -> float:
    """The lowest value the range's grid represents."""
    return (scheme.qmin - r.zero_point) * r.scale


def negative_clip_cause(name: str, stats: TensorStats, scheme: QScheme, method: str, cfg: LayerConfig) -> Cause | None:
    """Values below zero on a grid whose lowest value is zero (a non-negative grid, e.g. a percentile range that
    dropped the negative tail): all of them become 0. A symmetric, signed grid keeps them."""
    if stats.min >= 0 or cfg.act_symmetric:
        return None
    now = compute_range(stats, method, scheme)
    grid_min = _grid(now, scheme)
    h = stats.histogram()
    below = h.centers < grid_min - now.scale / 2
    neg = float(h.counts[h.centers < 0].sum()) / max(h.total, 1.0)
    clipped = float(h.counts[below].sum()) / max(h.total, 1.0)
    if grid_min < 0 or clipped < NEG_MIN_FRACTION:
        return None
    signed = compute_range(stats, method, QScheme(scheme.bits, True, True, scheme.reduce_range))
    gain = _db(now.total_error / signed.total_error) if signed.total_error > 0 else 0.0
    if gain < MIN_GAIN_DB:
        return None
    return Cause("negative_clipped", name, "activations", gain, _named(neg=neg, clipped=clipped, grid_min=grid_min,
                                                         data_min=stats.min, err_now=now.total_error,
                                                         err_fix=signed.total_error),
                 Fix((name,), (("act_symmetric", True),)), "symmetric")


def add_scale_cause(name: str, inputs: list[TensorStats], out_range: RangeResult | None, scheme: QScheme) -> Cause | None:
    """A residual add whose two inputs span very different ranges: the sum's grid is sized by the wide one, so
    the narrow branch keeps only a few of its levels. Measured: the narrow input's SQNR on its own grid vs on the
    sum's grid (rounding noise step^2/12 of each, against the narrow input's mean square); keeping the sum in
    16 bits gives the narrow branch its detail back (simulated mixed precision)."""
    if len(inputs) != 2 or out_range is None:
        return None
    wide, narrow = sorted(inputs, key=lambda s: s.absmax, reverse=True)
    ratio = wide.absmax / max(narrow.absmax, 1e-12)
    if ratio < ADD_RATIO_THRESHOLD:
        return None
    signal = histogram_moments(narrow.histogram())[2]
    own_step = (max(narrow.max, 0.0) - min(narrow.min, 0.0)) / (scheme.qmax - scheme.qmin)
    on_own, on_sum = _db(signal / (own_step ** 2 / 12)), _db(signal / (out_range.scale ** 2 / 12))
    if on_own - on_sum < MIN_GAIN_DB:
        return None
    return Cause("add_scales", name, "activations", on_own - on_sum, _named(ratio=ratio, wide=wide.absmax, narrow=narrow.absmax,
                                                            sqnr_now=on_sum, sqnr_fix=on_own),
                 Fix((name,), (("act_bits", 16),)), "clipping")


def act_bits_cause(name: str, stats: TensorStats, scheme: QScheme, cfg: LayerConfig) -> Cause | None:
    """Even the best clip range (mse) leaves this activation below BITS_SQNR_DB with rounding the larger error:
    the width, not the range, is what is short. The fix is more bits for this layer (8, or 16 from 8)."""
    best = compute_range(stats, "mse", scheme)
    signal = histogram_moments(stats.histogram())[2]
    sqnr = _db(signal / best.total_error) if best.total_error > 0 else math.inf
    if sqnr >= BITS_SQNR_DB or best.rounding_error <= best.clip_error or cfg.act_bits >= 16:
        return None
    bits = 8 if cfg.act_bits < 8 else 16
    more = compute_range(stats, "mse", replace(scheme, bits=bits))
    fixed = _db(signal / more.total_error) if more.total_error > 0 else math.inf
    return Cause("too_few_bits", name, "activations", min(fixed - sqnr, 60.0),
                 _named(bits=scheme.bits, sqnr_now=sqnr, sqnr_fix=fixed, rounding=best.rounding_error,
                        clip=best.clip_error), Fix((name,), (("act_bits", bits),)), "clipping")


def weight_bits_cause(name: str, w: torch.Tensor, cfg: LayerConfig, scheme: QScheme) -> Cause | None:
    """The weight (with its configured granularity, BN folded) is below BITS_SQNR_DB at its bits; weights use
    their min/max, so all of it is rounding error. The fix is 8-bit weights for this layer."""
    if not cfg.quantizes_weight or cfg.weight_dtype != "int" or scheme.bits >= 8 or scheme.granularity == "group":
        return None
    sqnr = weight_sqnr_db(w.detach(), scheme)
    if sqnr >= BITS_SQNR_DB:
        return None
    fixed = weight_sqnr_db(w.detach(), replace(scheme, bits=8))
    return Cause("too_few_bits", name, "weights", fixed - sqnr, _named(bits=scheme.bits, wsqnr_now=sqnr, wsqnr_fix=fixed),
                 Fix((name,), (("weight_bits", 8),)), "lowbit")
