"""Per-layer numbers the Calibration and Learn pages show, computed here so the pages only draw:
one layer's clip range under each calibration method, how unequal its weight channels are,
its folded weight, and whether a model has activations unbounded above.
"""

from __future__ import annotations

import numpy as np
import torch

from qcore.quant.calibration import RangeResult, compute_range
from qcore.quant.qparams import QScheme
from qcore.quant.stats import TensorStats

__all__ = ["UNBOUNDED_ACTIVATIONS", "method_ranges", "channel_spread", "folded_weight", "has_unbounded_activations",
           "model_facts"]

# Activation types with no upper bound: a few large outputs stretch their quantization range.
UNBOUNDED_ACTIVATIONS = ("GELU", "SiLU", "Hardswish", "Mish")


def method_ranges(stats: TensorStats, methods: list[str], bits: int, symmetric: bool) -> dict[str, RangeResult]:
    """Each method's clip range, scale and errors for one activation at `bits` bits (a symmetric
    grid is signed, as in the study the page shows)."""
    scheme = QScheme(bits, symmetric=symmetric, signed=symmetric)
    return {m: compute_range(stats, m, scheme) for m in methods}


def channel_spread(mins: list[float], maxs: list[float]) -> float:
    """The widest output channel's absolute range over the median channel's: how much a single
    per-tensor scale would squeeze the narrow channels."""
    widest = max(abs(a) for a in [*maxs, *mins])
    median = np.median([max(abs(a), abs(b)) for a, b in zip(mins, maxs)])
    return widest / max(1e-12, median)


def folded_weight(sim, name: str) -> torch.Tensor:
    """The float weight of layer `name` in the QuantSim (BN already folded in), detached."""
    return sim.weight_layers[name].layer.weight.detach()


def has_unbounded_activations(points: list[dict]) -> bool:
    """Whether any quantization point (a study's `points`: dicts with a "type") follows an
    activation unbounded above, for which clipping the activation (GELU10) is worth trying."""
    return any(p["type"] in UNBOUNDED_ACTIVATIONS for p in points)


def model_facts(loaded) -> dict:
    """What the Model page says about a loaded model before any experiment: its format, its
    preprocessing, and which layers the default W8A8 simulation quantizes and which stay float."""
    from qcore.quant.quantsim import QuantSim

    return {"format": loaded.info.get("format") or loaded.spec.family, "arch": loaded.info.get("arch"),
            "preprocess": loaded.spec.preprocess.describe(), "inventory": QuantSim(loaded.module).layer_inventory()}
