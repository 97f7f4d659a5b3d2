"""Five Learn-page topics, each a claim from the quantization literature checked on the loaded model.

Every topic returns a typed report with the measured numbers and a `Verdict`: `holds` is True
(the model agrees with the claim), False (it does not) or None (the claim is about something this
model does not have), decided by an explicit rule over the numbers in the report, and `reason` is a
short code the page turns into words in the user's language (so no sentence is built here).

The rules and their thresholds are module constants, so a page can print the rule it applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from qcore.analysis.evaluate import logits, scores, sqnr_db
from qcore.quant.lowbit import fake_quantize_lowbit
from qcore.quant.progress import Progress, silent
from qcore.quant.qconfig import QuantConfig, RecoveryStep
from qcore.quant.quantsim import QuantSim
from qcore.quant.build import calibrated_sim
from qcore.quant.recovery.graph import norm_linear_pairs
from qcore.zoo.report import Report

__all__ = ["Verdict", "LATENCY_MARGIN", "LINEAR_HEAVY_SHARE", "ACCURACY_MARGIN", "FP16_MAX", "BF16_MAX", "SMOOTH_ALPHA", "DynamicStaticReport",
           "SMOOTH_GAP", "linear_mac_share", "dynamic_verdict", "LowBitReport", "lowbit_errors", "lowbit_accuracy", "lowbit_verdict",
           "SmoothQuantReport", "smoothquant_topic", "smoothquant_verdict", "Fp16Report", "fp16_overflow",
           "fp16_verdict", "SpreadReport", "channel_spreads", "spread_accuracy", "spread_verdict", "TOPIC_RUNS",
           "measure_topic"]

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


# --- 1. dynamic vs static PTQ -------------------------------------------------------------------------

@torch.no_grad()
def linear_mac_share(module: nn.Module, input_shape: tuple[int, ...]) -> float:
    """The fraction of the model's Conv2d + Linear multiply-accumulates done by Linear layers (one image)."""
    macs = {"linear": 0, "conv": 0}

    def hook(m, inp, out):
        if isinstance(m, nn.Linear):
            macs["linear"] += out.numel() * m.in_features
        else:
            macs["conv"] += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        module(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    total = macs["linear"] + macs["conv"]
    return macs["linear"] / total if total else 0.0


@dataclass
class DynamicStaticReport(Report):
    """FP32, dynamic INT8 and static INT8 of one model: accuracy and interleaved median latency."""

    kind: ClassVar[str] = "learn_dynamic"
    model: str
    eval_images: int
    threads: int
    batch: int
    accuracy: dict[str, float]
    latency_ms: dict[str, float]  # median of interleaved calls
    dynamic_layers: list[str]  # the layers quantize_dynamic actually replaced
    linear_layers: list[str]
    conv_layers: int
    linear_mac_share: float
    static_backend: str
    notes: list[str] = field(default_factory=list)


def dynamic_verdict(r: DynamicStaticReport) -> Verdict:
    """Claim: dynamic INT8 suits Linear-heavy models, static INT8 wins on convolutions. Rule: on a model
    whose Linear layers do >= LINEAR_HEAVY_SHARE of the MACs, dynamic must beat FP32 by LATENCY_MARGIN;
    otherwise static must beat dynamic by LATENCY_MARGIN."""
    t = r.latency_ms
    if r.linear_mac_share >= LINEAR_HEAVY_SHARE:
        ok = _faster(t["dynamic_int8"], t["fp32"])
        return Verdict(ok, "linear_dynamic_faster" if ok else "linear_dynamic_not_faster")
    ok = _faster(t["static_int8"], t["dynamic_int8"])
    return Verdict(ok, "conv_static_faster" if ok else "conv_static_not_faster")


# --- 2. 4-bit formats ---------------------------------------------------------------------------------

LOWBIT_VARIANTS = (("INT4 per-channel", "int4", None), ("INT4 per-group", "int4", 64), ("NF4", "nf4", 64),
                   ("FP4 E2M1", "fp4", 64))


@dataclass
class LowBitReport(Report):
    """Error of each 4-bit format on every weight of the model, and (when measured) the model's accuracy
    with all its weights in that format, activations in FP32."""

    kind: ClassVar[str] = "learn_lowbit"
    model: str
    block_size: int
    layers: int
    weights: int
    rows: list[dict]  # {"format", "sqnr_db" (all weights together), "median_layer_sqnr_db", "worst_layer"}
    fp32_accuracy: float | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    eval_images: int = 0


def _variant(w: torch.Tensor, fmt: str, block: int | None) -> torch.Tensor:
    return fake_quantize_lowbit(w, fmt, block)


def lowbit_errors(sim: QuantSim, block_size: int = 64, name: str = "") -> LowBitReport:
    """SQNR of each 4-bit variant on the real (BN-folded) weights: all weights pooled, and per layer."""
    weights = {n: wl.layer.weight.detach() for n, wl in sim.weight_layers.items()}
    rows = []
    for label, fmt, block in LOWBIT_VARIANTS:
        block = block_size if block else None
        signal = noise = 0.0
        per_layer = {}
        for n, w in weights.items():
            q = _variant(w, fmt, block)
            signal += float((w.double() ** 2).sum())
            noise += float(((w.double() - q.double()) ** 2).sum())
            per_layer[n] = sqnr_db(w, q)
        worst = min(per_layer, key=per_layer.get)
        rows.append({"format": label, "sqnr_db": round(10 * math.log10(signal / noise), 2) if noise else math.inf,
                     "median_layer_sqnr_db": round(float(torch.tensor(list(per_layer.values())).median()), 2),
                     "worst_layer": worst, "worst_layer_sqnr_db": round(per_layer[worst], 2)})
    return LowBitReport(name, block_size, len(weights), sum(w.numel() for w in weights.values()),
                        rows)


@torch.no_grad()
def lowbit_accuracy(module: nn.Module, xs: list[torch.Tensor], labels: torch.Tensor, block_size: int = 64,
                    progress: Progress | None = None) -> dict[str, float]:
    """Top-1 with every Conv2d/Linear weight (BN folded) in each 4-bit variant and activations in FP32;
    "FP32" is the same folded model unquantized."""
    say = progress or silent
    float_cfg = QuantConfig().with_default(weight_dtype="fp32", act_dtype="fp32")
    out = {"FP32": scores(logits(QuantSim(module, float_cfg), xs), labels).top1}
    for i, (label, fmt, block) in enumerate(LOWBIT_VARIANTS):
        say((i + 1) / (len(LOWBIT_VARIANTS) + 1), f"evaluating {label}")
        sim = QuantSim(module, float_cfg)
        for wl in sim.weight_layers.values():
            wl.layer.weight.copy_(_variant(wl.layer.weight, fmt, block_size if block else None))
        sim.weights_changed()
        out[label] = scores(logits(sim, xs), labels).top1
    return out


def lowbit_verdict(r: LowBitReport) -> Verdict:
    """Claim (QLoRA): for bell-shaped weights NF4 beats INT4 and FP4 at the same block size, and small
    blocks beat one scale per channel. Rule: NF4's pooled SQNR is the highest of the three block formats
    and INT4 per-group's is above INT4 per-channel's."""
    sq = {row["format"]: row["sqnr_db"] for row in r.rows}
    nf4_best = sq["NF4"] >= max(sq["INT4 per-group"], sq["FP4 E2M1"])
    groups_help = sq["INT4 per-group"] > sq["INT4 per-channel"]
    if nf4_best and groups_help:
        return Verdict(True, "nf4_best")
    return Verdict(False, "groups_no_help" if nf4_best else "nf4_not_best")


# --- 3. SmoothQuant ------------------------------------------------------------------------------------

@dataclass
class SmoothQuantReport(Report):
    """Activation outliers of LayerNorm -> Linear inputs before and after SmoothQuant, and A8 accuracy."""

    kind: ClassVar[str] = "learn_smoothquant"
    model: str
    applies: bool
    alpha: float = 0.5
    pairs: list[dict] = field(default_factory=list)  # {"norm", "linears", "before", "after", "outlier_before/after"}
    fp32_accuracy: float | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    eval_images: int = 0
    act_bits: int = 8


def _outlier_ratio(channel_max: list[float]) -> float:
    """The largest channel's maximum over the median channel's: how far the outliers stick out."""
    t = torch.tensor(channel_max)
    return round(float(t.max() / t.median().clamp_min(1e-12)), 2)


def smoothquant_topic(module: nn.Module, calib: list[torch.Tensor], xs: list[torch.Tensor] | None, labels,
                      alpha: float = SMOOTH_ALPHA, act_bits: int = 8, name: str = "",
                      progress: Progress | None = None) -> SmoothQuantReport:
    """W8A`act_bits` PTQ with and without SmoothQuant (alpha) on the same calibration images; the per-channel
    maxima SmoothQuant measured and left; accuracies when evaluation batches are given."""
    say = progress or silent
    base = QuantConfig().with_default(act_bits=act_bits)
    if not norm_linear_pairs(QuantSim(module, base)):
        return SmoothQuantReport(name, False, alpha, act_bits=act_bits)
    say(0.1, "calibrating plain PTQ")
    plain = calibrated_sim(module, base, calib)
    say(0.3, "SmoothQuant, then calibrating")
    smoothed = calibrated_sim(module, QuantConfig(recovery=(RecoveryStep("smoothquant", (("alpha", alpha),)),))
                                   .with_default(act_bits=act_bits), calib)
    changes = smoothed.recovery_results[0].changes["pairs"]
    pairs = [{"norm": n, "linears": p["linears"], "before": p["act_max_before"], "after": p["act_max_after"],
              "outlier_before": _outlier_ratio(p["act_max_before"]), "outlier_after": _outlier_ratio(p["act_max_after"])}
             for n, p in changes.items()]
    report = SmoothQuantReport(name, True, alpha, pairs, act_bits=act_bits)
    if xs is not None:
        say(0.5, "evaluating FP32, PTQ and PTQ + SmoothQuant")
        report.fp32_accuracy = scores(logits(module, xs), labels).top1
        report.accuracy_before = scores(logits(plain, xs), labels).top1
        report.accuracy_after = scores(logits(smoothed, xs), labels).top1
        report.eval_images = len(labels)
    say(1.0, "done")
    return report


def smoothquant_verdict(r: SmoothQuantReport) -> Verdict:
    """Claim: migrating the outliers into the weights flattens the activations and improves A8 accuracy.
    Rule: the median pair's outlier ratio falls, and (when measured) plain A8 PTQ is at least SMOOTH_GAP below
    FP32 and SmoothQuant's A8 accuracy is above plain A8's."""
    if not r.applies:
        return Verdict(None, "no_norm_linear")
    before = sorted(p["outlier_before"] for p in r.pairs)[len(r.pairs) // 2]
    after = sorted(p["outlier_after"] for p in r.pairs)[len(r.pairs) // 2]
    if after >= before:
        return Verdict(False, "outliers_not_reduced")
    if r.accuracy_after is None:
        return Verdict(True, "outliers_reduced")
    if r.fp32_accuracy - r.accuracy_before < SMOOTH_GAP:
        return Verdict(False, "no_gap")  # plain A8 already matches FP32: nothing for the migration to win back
    return Verdict(True, "holds") if r.accuracy_after > r.accuracy_before else Verdict(False, "accuracy_not_improved")


# --- 4. FP16 overflow vs BF16 ----------------------------------------------------------------------------

@dataclass
class Fp16Report(Report):
    """Where FP16's range ends on this model: its largest activation, the input scale that overflows FP16,
    whether BF16 survives that scale, and each format's error on the real activations."""

    kind: ClassVar[str] = "learn_fp16"
    model: str
    max_abs_activation: float
    max_layer: str
    headroom: float  # FP16_MAX / max_abs_activation
    sweep: list[dict]  # {"scale", "fp16_finite", "bf16_finite", "first_inf_layer"}
    overflow_scale: float | None
    bf16_finite_at_overflow: bool | None
    sqnr_db: dict[str, float]  # median over layers, on the real activations at scale 1


def _format_sim(module: nn.Module, fmt: str, x: torch.Tensor) -> QuantSim:
    sim = QuantSim(module, QuantConfig().with_default(weight_dtype=fmt, act_dtype=fmt))
    sim.collect_stats([x[:1]])
    sim.apply_ranges()
    return sim


@torch.no_grad()
def _first_inf(sim: QuantSim, x: torch.Tensor) -> str | None:
    """The first quantization point whose FP16/BF16 output is not finite, or None."""
    with sim.capture() as records:
        sim(x)
    return next((name for name, _, out in records if not torch.isfinite(out).all()), None)


@torch.no_grad()
def _activation_sqnr(module: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Median over layers of the SQNR of each activation cast to FP16 and to BF16 (cast alone, per layer)."""
    from qcore.quant.fakequant import fake_cast

    sim = QuantSim(module)
    with sim.disabled(), sim.capture() as records:
        sim(x)
    return {fmt.upper(): round(float(torch.tensor([sqnr_db(o, fake_cast(o, fmt)) for _, _, o in records
                                                    if o.abs().sum() > 0]).median()), 1) for fmt in ("fp16", "bf16")}


def fp16_overflow(module: nn.Module, stats: dict, x: torch.Tensor, max_power: int = 30, name: str = "") -> Fp16Report:
    """Multiply the input by 2^k, k = 0, 1, ..., until some FP16 activation is inf (every weight and
    activation cast as the simulation does); BF16 is run at that scale too. `stats` are the page's
    statistics (float activations at scale 1), whose largest |value| predicts the overflow."""
    layer = max(stats, key=lambda n: max(abs(stats[n].min), abs(stats[n].max)))
    biggest = max(abs(stats[layer].min), abs(stats[layer].max))
    fp16, bf16 = _format_sim(module, "fp16", x), _format_sim(module, "bf16", x)
    sweep, overflow, bf16_ok = [], None, None
    start = max(1, int(math.log2(max(1.0, FP16_MAX / max(biggest, 1e-30)))) - 2)  # skip scales far below the prediction
    for k in [0, *range(start, max_power + 1)]:
        inf16 = _first_inf(fp16, x * 2.0 ** k)
        row = {"scale": 2.0 ** k, "fp16_finite": inf16 is None, "bf16_finite": None, "first_inf_layer": inf16}
        if inf16 is not None or k == 0:
            row["bf16_finite"] = _first_inf(bf16, x * 2.0 ** k) is None
        sweep.append(row)
        if inf16 is not None:
            overflow, bf16_ok = 2.0 ** k, row["bf16_finite"]
            break
    return Fp16Report(name, round(biggest, 4), layer, round(FP16_MAX / max(biggest, 1e-30), 1),
                      sweep, overflow, bf16_ok, _activation_sqnr(module, x))


def fp16_verdict(r: Fp16Report) -> Verdict:
    """Claim: FP16 tops out at 65504, BF16 has FP32's range. Rule: some input scale in the sweep makes an
    FP16 activation inf while BF16 stays finite at that same scale."""
    if r.overflow_scale is None:
        return Verdict(False, "no_overflow_in_sweep")
    return Verdict(True, "holds") if r.bf16_finite_at_overflow else Verdict(False, "bf16_overflowed")


# --- 5. why MobileNet suffers -----------------------------------------------------------------------------

SPREAD_CAP = 1e6  # max/min of per-channel absmax is capped here (a channel that is all zero gives infinity)


@dataclass
class SpreadReport(Report):
    """Per-output-channel weight range spread of each layer (BN folded), depthwise apart, and (when
    measured) W8A8 PTQ accuracy with per-tensor and per-channel weights."""

    kind: ClassVar[str] = "learn_spread"
    model: str
    rows: list[dict]  # {"layer", "depthwise", "channels", "spread", "zero_channels"}
    median_depthwise: float | None
    median_other: float | None
    fp32_accuracy: float | None = None
    accuracy: dict[str, float] = field(default_factory=dict)  # "per-tensor", "per-channel"
    eval_images: int = 0


def _is_depthwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels


def channel_spreads(sim: QuantSim, name: str = "") -> SpreadReport:
    """max/min over output channels of each channel's absolute maximum, per layer (capped at SPREAD_CAP)."""
    rows = []
    for name, wl in sim.weight_layers.items():
        w = wl.layer.weight.detach()
        amax = w.abs().reshape(w.shape[0], -1).amax(1)
        lo, hi = float(amax.min()), float(amax.max())
        rows.append({"layer": name, "depthwise": _is_depthwise(wl.layer), "channels": int(w.shape[0]),
                     "spread": round(min(SPREAD_CAP, hi / lo) if lo > 0 else SPREAD_CAP, 2),
                     "zero_channels": int((amax == 0).sum())})

    def median(sel):
        vals = [r["spread"] for r in rows if r["depthwise"] == sel]
        return round(float(torch.tensor(vals).median()), 2) if vals else None

    return SpreadReport(name, rows, median(True), median(False))


def spread_accuracy(module: nn.Module, calib: list[torch.Tensor], xs: list[torch.Tensor], labels,
                    progress: Progress | None = None) -> dict[str, float]:
    """Top-1 of W8A8 PTQ (max calibration) with per-tensor and with per-channel weights, and FP32."""
    say = progress or silent
    out = {"FP32": scores(logits(module, xs), labels).top1}
    for i, gran in enumerate(("tensor", "channel")):
        say(0.2 + 0.4 * i, f"W8A8 per-{gran}: calibrating and evaluating")
        sim = calibrated_sim(module, QuantConfig().with_default(weight_granularity=gran), calib)
        out[f"per-{gran}"] = scores(logits(sim, xs), labels).top1
    return out


def spread_verdict(r: SpreadReport) -> Verdict:
    """Claim: depthwise layers' channels differ wildly in range, so per-tensor weights collapse where
    per-channel holds. Rule: the depthwise median spread is above the other layers', and (when
    measured) per-channel beats per-tensor by ACCURACY_MARGIN. No depthwise layer: does not apply."""
    if r.median_depthwise is None:
        return Verdict(None, "no_depthwise")
    if r.median_other is not None and r.median_depthwise <= r.median_other:
        return Verdict(False, "depthwise_not_wider")
    if r.accuracy and r.accuracy["per-channel"] - r.accuracy["per-tensor"] < ACCURACY_MARGIN:
        return Verdict(False, "per_tensor_holds")
    return Verdict(True, "holds" if r.accuracy else "depthwise_wider")


# --- the measured halves, as one background job each -------------------------------------------------------

TOPIC_RUNS = ("lowbit", "smoothquant", "spread")


def measure_topic(topic: str, model, data: str | None = None, calib_size: int = 256, eval_size: int = 1000,
                  seed: int = 0, progress: Progress | None = None) -> dict:
    """The accuracy half of topic `topic` (one of TOPIC_RUNS) on `eval_size` test images: 4-bit formats,
    SmoothQuant or per-tensor vs per-channel. Returns {"accuracy": ..., "eval_images": n} ("report": the
    SmoothQuantReport for "smoothquant")."""
    from qcore.zoo.inputs import prepare_inputs

    if topic not in TOPIC_RUNS:
        raise ValueError(f"unknown topic {topic!r}; choose from {', '.join(TOPIC_RUNS)}")
    say = progress or silent
    say(0.0, "loading images")
    inp = prepare_inputs(model, data, calib_size, eval_size, seed)
    m, xs, labels = inp.loaded.module, inp.eval_batches, inp.labels
    if topic == "lowbit":
        out = {"accuracy": lowbit_accuracy(m, xs, labels, progress=say)}
    elif topic == "spread":
        out = {"accuracy": spread_accuracy(m, inp.calib_batches, xs, labels, progress=say)}
    else:
        out = {"report": smoothquant_topic(m, inp.calib_batches, xs, labels, name=inp.loaded.name, progress=say)}
    say(1.0, "done")
    return {**out, "eval_images": inp.eval_size, "scored_by": inp.scored_by}
