"""Quantization configs: plain, frozen data that serializes to JSON.

One `QuantConfig` drives the fake-quant simulation, the real INT8 backends and the exported
file, so partial and mixed precision are configs, not code paths: a layer kept in float is a
layer whose `LayerConfig` says `weight_dtype="fp32"` and `act_dtype="fp32"` (or `enabled=False`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace

from qcore.quant.calibration import parse_method
from qcore.quant.qparams import FLOAT_FORMATS, QScheme

__all__ = ["DTYPES", "WEIGHT_RANGES", "RECOVERY_STEPS", "LayerConfig", "QuantConfig", "RecoveryStep", "parse_steps"]

DTYPES = ("int", *FLOAT_FORMATS)  # "int" uses the bit width; the others are float formats
# "full": 8-bit weights. "reduced": 7-bit weights ([-64, 63]), so that pairs of u8 x s8 products fit
# the int16 that CPUs without VNNI add them into (255 * 64 * 2 = 32640 < 32767). "auto": reduced
# exactly where this CPU has no VNNI (resolved when a QuantSim is built, and recorded so).
WEIGHT_RANGES = ("auto", "full", "reduced")


@dataclass(frozen=True)
class LayerConfig:
    """How one layer is quantized: its weights (Conv2d/Linear) and the activation it outputs."""

    weight_dtype: str = "int"
    weight_bits: int = 8
    weight_granularity: str = "channel"  # "tensor", "channel" (output channels) or "group"
    weight_symmetric: bool = True
    weight_group_size: int = 0  # for granularity "group": input channels per group
    act_dtype: str = "int"
    act_bits: int = 8
    act_method: str = "max"
    act_symmetric: bool = False
    enabled: bool = True  # False keeps the whole layer in float
    # A fixed activation clip range (lo, hi) that replaces act_method's for this layer: the what-if editor's
    # typed or dragged range. Calibration still collects statistics (for the histogram and the error estimates).
    act_clip: tuple[float, float] | None = None

    def __post_init__(self):
        if self.act_clip is not None:  # JSON gives a list: keep a tuple, so the config stays hashable
            lo, hi = (float(v) for v in self.act_clip)
            if not lo < hi:
                raise ValueError(f"act_clip must be (low, high) with low < high, not {tuple(self.act_clip)!r}")
            object.__setattr__(self, "act_clip", (lo, hi))
        for what in ("weight", "act"):
            if getattr(self, f"{what}_dtype") not in DTYPES:
                raise ValueError(f"{what}_dtype must be one of {DTYPES}, not {getattr(self, f'{what}_dtype')!r}")
        if not isinstance(self.weight_bits, int) or not 2 <= self.weight_bits <= 8:
            raise ValueError(f"weight_bits must be an integer from 2 to 8, not {self.weight_bits!r}")
        self.weight_scheme()  # validates granularity and group size
        self.act_scheme(False)
        parse_method(self.act_method)

    @property
    def quantizes_weight(self) -> bool:
        return self.enabled and self.weight_dtype != "fp32"

    @property
    def quantizes_act(self) -> bool:
        return self.enabled and self.act_dtype != "fp32"

    def weight_scheme(self) -> QScheme:
        """Signed weights, as every INT8 CPU kernel expects; groups run along input channels."""
        return QScheme(
            self.weight_bits, self.weight_symmetric, True, False, self.weight_granularity,
            1 if self.weight_granularity == "group" else 0, self.weight_group_size,
        )

    def act_scheme(self, reduce_range: bool = False) -> QScheme:
        """Activations: uint8-style asymmetric by default (x86 and ONNX Runtime U8S8)."""
        return QScheme(self.act_bits, self.act_symmetric, self.act_symmetric, reduce_range, "tensor")


RECOVERY_STEPS = ("cle", "bias_correction", "adaround", "gptq", "brecq", "smoothquant")


@dataclass(frozen=True)
class RecoveryStep:
    """One accuracy-recovery step applied to the simulated model before calibration, with its settings
    (e.g. adaround's iterations, smoothquant's alpha); see qcore.quant.recovery."""

    name: str
    params: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        if self.name not in RECOVERY_STEPS:
            raise ValueError(f"unknown recovery step {self.name!r}; choose from {', '.join(RECOVERY_STEPS)}")

    def param(self, key: str, default):
        return type(default)(dict(self.params).get(key, default))

    def to_dict(self) -> dict:
        return {"name": self.name, **dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict | str) -> "RecoveryStep":
        if isinstance(d, str):
            return cls(d)
        return cls(d["name"], tuple(sorted((k, v) for k, v in d.items() if k != "name")))


def parse_steps(text: str) -> tuple[RecoveryStep, ...]:
    """'cle,bias_correction,adaround:iters=500,smoothquant:alpha=0.5' -> steps, in order."""
    steps = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        name, _, rest = item.partition(":")
        params = []
        for kv in (p for p in rest.split(";") if p):
            key, _, value = kv.partition("=")
            try:
                params.append((key.strip(), float(value)))
            except ValueError:
                raise ValueError(f"step setting {kv!r} is not key=number") from None
        steps.append(RecoveryStep(name.strip(), tuple(params)))
    return tuple(steps)


@dataclass(frozen=True)
class QuantConfig:
    """A whole model's config: a default for every layer plus per-layer overrides by name."""

    default: LayerConfig = field(default_factory=LayerConfig)
    layers: tuple[tuple[str, LayerConfig], ...] = ()
    fold_bn: bool = True
    reduce_range: bool = False  # activations one bit narrower (fbgemm's own guard against int16 overflow)
    weight_range: str = "auto"
    recovery: tuple[RecoveryStep, ...] = ()  # applied in order after BN folding, before calibration
    norm_outputs: bool = True  # quantize LayerNorm outputs (the input every transformer Linear reads)
    attention: bool = True  # quantize attention's activation x activation matmuls (their outputs) and softmax

    def __post_init__(self):
        if self.weight_range not in WEIGHT_RANGES:
            raise ValueError(f"weight_range must be one of {', '.join(WEIGHT_RANGES)}, not {self.weight_range!r}")

    def for_layer(self, name: str) -> LayerConfig:
        cfg = next((c for layer_name, c in self.layers if layer_name == name), self.default)
        if self.weight_range == "reduced" and cfg.weight_dtype == "int" and cfg.weight_bits > 7:
            return replace(cfg, weight_bits=7)  # the same grid as 8 bits with reduce_range: [-64, 63]
        return cfg

    def resolved(self, vnni: bool | None = None) -> "QuantConfig":
        """"auto" made concrete for a CPU (`vnni` None: this one): "reduced" where u8 x s8 products
        would saturate in int16, "full" where they accumulate exactly."""
        if self.weight_range != "auto":
            return self
        if vnni is None:
            from qcore.quant.isa import cpu_isa

            vnni = cpu_isa().vnni
        return replace(self, weight_range="full" if vnni else "reduced")

    def weight_range_note(self) -> str:
        """A sentence for pages and reports: which weight range is used, and why."""
        if self.weight_range == "reduced":
            return "weights use 7 bits ([-64, 63]): without VNNI, INT8 kernels add u8 x s8 pairs in int16, which 8-bit weights overflow"
        if self.weight_range == "full":
            return "weights use the full 8 bits"
        return "weight range chosen per CPU: 7 bits without VNNI, 8 bits with it"

    def with_layer(self, name: str, **changes) -> "QuantConfig":
        """A copy where layer `name` has `changes` applied on top of its stored config (not the view
        `for_layer` gives, which the weight range may have narrowed to 7 bits)."""
        stored = next((c for layer_name, c in self.layers if layer_name == name), self.default)
        cfg = replace(stored, **changes)
        others = tuple((n, c) for n, c in self.layers if n != name)
        return replace(self, layers=others + ((name, cfg),))

    def with_default(self, **changes) -> "QuantConfig":
        return replace(self, default=replace(self.default, **changes))

    def to_dict(self) -> dict:
        return {
            "default": asdict(self.default),
            "layers": {name: asdict(cfg) for name, cfg in self.layers},
            "fold_bn": self.fold_bn,
            "reduce_range": self.reduce_range,
            "weight_range": self.weight_range,
            "recovery": [step.to_dict() for step in self.recovery],
            "norm_outputs": self.norm_outputs,
            "attention": self.attention,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "QuantConfig":
        known = {f.name for f in fields(LayerConfig)}

        def layer(x: dict) -> LayerConfig:
            unknown = set(x) - known
            if unknown:
                raise ValueError(f"unknown layer config keys: {', '.join(sorted(unknown))}")
            return LayerConfig(**x)

        return cls(
            default=layer(d.get("default", {})),
            layers=tuple((name, layer(cfg)) for name, cfg in d.get("layers", {}).items()),
            fold_bn=bool(d.get("fold_bn", True)),
            reduce_range=bool(d.get("reduce_range", False)),
            weight_range=str(d.get("weight_range", "auto")),
            recovery=tuple(RecoveryStep.from_dict(x) for x in d.get("recovery", ())),
            norm_outputs=bool(d.get("norm_outputs", True)),
            attention=bool(d.get("attention", True)),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "QuantConfig":
        return cls.from_dict(json.loads(text))
