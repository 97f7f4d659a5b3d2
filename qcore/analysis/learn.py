"""Numbers for the Learn page: each fundamental computed with the engine's own functions.

Nothing here is a hand-made illustration: the staircase is `fake_quantize`, the errors come
from `calibration.candidate_errors` on a real histogram, and the granularity comparison quantizes a real
weight tensor of the chosen model.
"""

from __future__ import annotations

import torch

from qcore.quant.calibration import candidate_errors
from qcore.quant.fakequant import fake_cast, fake_quantize, fake_quantize_scheme
from qcore.quant.qparams import QScheme, compute_qparams, minmax
from qcore.quant.stats import TensorStats

__all__ = ["affine_mapping", "staircase", "ste_curves", "granularity_errors", "clipping_sweep", "format_table",
           "symmetric_vs_asymmetric"]


def affine_mapping(lo: float, hi: float, bits: int, symmetric: bool) -> dict:
    """Scale, zero-point and integer range for a float range, plus where lo, 0 and hi land."""
    scheme = QScheme(bits, symmetric, symmetric)
    scale, zp = compute_qparams(lo, hi, scheme)
    s, z = float(scale), int(zp)
    as_int = lambda v: max(scheme.qmin, min(scheme.qmax, round(v / s) + z))  # noqa: E731
    return {"scale": s, "zero_point": z, "qmin": scheme.qmin, "qmax": scheme.qmax,
            "representable": ((scheme.qmin - z) * s, (scheme.qmax - z) * s),
            "codes": {"min": as_int(lo), "0": as_int(0.0), "max": as_int(hi)}, "levels": scheme.qmax - scheme.qmin + 1}


def staircase(lo: float, hi: float, bits: int, symmetric: bool, points: int = 2001) -> tuple[list[float], list[float]]:
    """x and fake_quantize(x) over a range a little wider than [lo, hi]: the quantize-dequantize curve."""
    m = affine_mapping(lo, hi, bits, symmetric)
    span = hi - lo
    x = torch.linspace(lo - 0.15 * span, hi + 0.15 * span, points)
    y = fake_quantize(x, torch.tensor(m["scale"]), torch.tensor(m["zero_point"]), m["qmin"], m["qmax"])
    return x.tolist(), y.tolist()


def ste_curves(lo: float, hi: float, bits: int, symmetric: bool, points: int = 1001) -> dict:
    """Forward (quantize-dequantize) and backward (straight-through gradient) of fake quantization."""
    m = affine_mapping(lo, hi, bits, symmetric)
    span = hi - lo
    x = torch.linspace(lo - 0.3 * span, hi + 0.3 * span, points, requires_grad=True)
    y = fake_quantize(x, torch.tensor(m["scale"]), torch.tensor(m["zero_point"]), m["qmin"], m["qmax"])
    y.sum().backward()
    return {"x": x.detach().tolist(), "forward": y.detach().tolist(), "gradient": x.grad.tolist()}


def granularity_errors(weight: torch.Tensor, bits: int, group_size: int = 8) -> list[dict]:
    """SQNR and MSE of one weight tensor quantized per tensor, per output channel and per group."""
    from qcore.analysis.evaluate import sqnr_db

    schemes = [("per-tensor", QScheme(bits, True, True, granularity="tensor")),
               ("per-channel", QScheme(bits, True, True, granularity="channel", axis=0))]
    if weight.dim() > 1 and weight.shape[1] > group_size and weight.shape[1] % group_size == 0:
        schemes.append((f"per-group ({group_size})", QScheme(bits, True, True, granularity="group", axis=1,
                                                             group_size=group_size)))
    rows = []
    for label, scheme in schemes:
        scale, zp = compute_qparams(*minmax(weight, scheme), scheme)
        wq = fake_quantize_scheme(weight, scale, zp, scheme)
        rows.append({"granularity": label, "scales": int(scale.numel()), "sqnr_db": round(sqnr_db(weight, wq), 2),
                     "mse": float(((weight - wq) ** 2).mean())})
    return rows


def clipping_sweep(stats: TensorStats, bits: int, symmetric: bool, steps: int = 60) -> dict:
    """Clipping, rounding and total error as the clip range shrinks from max towards zero."""
    scheme = QScheme(bits, symmetric, symmetric)
    lo0, hi0 = min(stats.min, 0.0), max(stats.max, 0.0)
    if symmetric:
        t = max(-lo0, hi0)
        lo0, hi0 = (-t if stats.min < 0 else 0.0), t
    alphas = torch.linspace(0.02, 1.0, steps, dtype=torch.float64)
    c, r, _, _ = candidate_errors(stats.histogram(), (alphas * lo0).float(), (alphas * hi0).float(), scheme)
    return {"clip_max": (alphas * hi0).tolist(), "clipping": c.tolist(), "rounding": r.tolist(), "total": (c + r).tolist()}


def symmetric_vs_asymmetric(stats: TensorStats, bits: int) -> list[dict]:
    """For a real activation: how many of the grid's levels the data can use, and the error, per scheme."""
    from qcore.quant.calibration import compute_range

    rows = []
    for label, sym in (("asymmetric", False), ("symmetric", True)):
        scheme = QScheme(bits, sym, sym)
        r = compute_range(stats, "max", scheme)
        used = (min(stats.max, r.clip_max) - max(stats.min, r.clip_min)) / r.scale
        rows.append({"scheme": label, "clip range": f"[{r.clip_min:.4g}, {r.clip_max:.4g}]", "scale": r.scale,
                     "zero-point": r.zero_point, "levels used": int(round(used)) + 1,
                     "levels available": scheme.qmax - scheme.qmin + 1, "total error": r.total_error})
    return rows


def format_table(values: torch.Tensor | None = None) -> list[dict]:
    """Range and precision of FP32, FP16, BF16 and INT8; with `values`, each format's error on them."""
    from qcore.analysis.evaluate import sqnr_db

    rows = []
    for name, dtype in (("FP32", torch.float32), ("FP16", torch.float16), ("BF16", torch.bfloat16)):
        info = torch.finfo(dtype)
        row = {"format": name, "bits": info.bits, "max": float(info.max), "smallest normal": float(info.tiny),
               "relative precision (eps)": float(info.eps)}
        if values is not None:
            row["SQNR on these values (dB)"] = round(sqnr_db(values, fake_cast(values, name.lower())), 1)
        rows.append(row)
    int8 = {"format": "INT8 (per tensor)", "bits": 8, "max": "127 x scale", "smallest normal": "scale",
            "relative precision (eps)": "scale / |x|"}
    if values is not None:
        scheme = QScheme(8, True, True)
        scale, zp = compute_qparams(values.min(), values.max(), scheme)
        int8["SQNR on these values (dB)"] = round(sqnr_db(values, fake_quantize_scheme(values, scale, zp, scheme)), 1)
    rows.append(int8)
    return rows
