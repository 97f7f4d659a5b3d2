"""Affine quantization parameters: integer range, scale and zero-point from a float range.

`x_q = clamp(round(x / scale) + zero_point, qmin, qmax)`, `x ~ (x_q - zero_point) * scale`.

The formulas follow torch.ao's observers (`_calculate_qparams`) exactly, so a range computed
here gives the same scale and zero-point the real INT8 backends derive from it:
- the range is widened to include 0, so that 0 (padding, ReLU) is exact;
- symmetric: scale = max(|min|, |max|) / ((qmax - qmin) / 2), zero-point 0 for signed types and
  the mid-point for unsigned ones;
- asymmetric: scale = (max - min) / (qmax - qmin), zero-point = qmin - round(min / scale);
- scale is at least float32 eps, so an all-zero tensor still quantizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = ["QScheme", "FLOAT_FORMATS", "qrange", "compute_qparams", "minmax", "group_view"]

FLOAT_FORMATS = ("fp32", "fp16", "bf16")
GRANULARITIES = ("tensor", "channel", "group")
EPS = torch.finfo(torch.float32).eps


@dataclass(frozen=True)
class QScheme:
    """How one tensor is quantized: plain data, so configs serialize to JSON.

    bits: 2..16 integer bits (INT8 kernels take 8 or fewer; 16-bit activations, "A16", are
    simulated for mixed precision). signed: int8-style [-2^(b-1), 2^(b-1)-1] versus uint8-style
    [0, 2^b - 1]. reduce_range: drop one bit of range (x86 fbgemm's guard against int16
    accumulator overflow without VNNI). granularity: 'tensor', 'channel' (one scale per slice
    along `axis`) or 'group' (one scale per `group_size` consecutive elements along `axis`
    within each output channel, as weight-only LLM schemes do).
    """

    bits: int = 8
    symmetric: bool = True
    signed: bool = True
    reduce_range: bool = False
    granularity: str = "tensor"
    axis: int = 0
    group_size: int = 0

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 16:
            raise ValueError(f"bits must be an integer from 2 to 16, not {self.bits!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, not {self.granularity!r}")
        if self.granularity == "group" and self.group_size < 1:
            raise ValueError("granularity 'group' needs a group_size of at least 1")
        if self.reduce_range and self.bits < 3:
            raise ValueError("reduce_range needs at least 3 bits")

    @property
    def qmin(self) -> int:
        return qrange(self.bits, self.signed, self.reduce_range)[0]

    @property
    def qmax(self) -> int:
        return qrange(self.bits, self.signed, self.reduce_range)[1]

    def to_dict(self) -> dict:
        return asdict(self)


def qrange(bits: int, signed: bool, reduce_range: bool = False) -> tuple[int, int]:
    """The integer range of a `bits`-bit type, one bit narrower with reduce_range."""
    b = bits - 1 if reduce_range else bits
    if signed:
        return -(2 ** (b - 1)), 2 ** (b - 1) - 1
    return 0, 2**b - 1


def compute_qparams(
    min_val: torch.Tensor | float, max_val: torch.Tensor | float, scheme: QScheme
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero-point (int32) for a clip range; element-wise for per-channel."""
    min_val = torch.as_tensor(min_val, dtype=torch.float32)
    max_val = torch.as_tensor(max_val, dtype=torch.float32)
    if torch.any(min_val > max_val):
        raise ValueError("clip range has min > max")
    qmin, qmax = scheme.qmin, scheme.qmax
    min_neg = torch.clamp(min_val, max=0.0)
    max_pos = torch.clamp(max_val, min=0.0)
    # Divide by a tensor, not a Python number: CUDA divides by a scalar as a product with its reciprocal,
    # one ulp off the CPU's quotient, and a symmetric grid puts the extreme weight on a tie (-7.5 steps at
    # 4 bits), so that ulp moved it a whole step on the GPU (tests/train/test_cuda.py, isolated check).
    if scheme.symmetric:
        max_abs = torch.maximum(-min_neg, max_pos)
        scale = max_abs / torch.full_like(max_abs, (qmax - qmin) / 2)
        scale = torch.clamp(scale, min=EPS)
        zp_value = 0 if scheme.signed else (qmin + qmax + 1) // 2
        zero_point = torch.full_like(scale, zp_value, dtype=torch.int32)
    else:
        span = max_pos - min_neg
        scale = span / torch.full_like(span, float(qmax - qmin))
        scale = torch.clamp(scale, min=EPS)
        zero_point = qmin - torch.round(min_neg / scale).to(torch.int32)
        zero_point = torch.clamp(zero_point, qmin, qmax).to(torch.int32)
    return scale.to(torch.float32), zero_point


def group_view(w: torch.Tensor, axis: int, group_size: int) -> torch.Tensor:
    """View `w` as (out_channels, n_groups, group_size, rest) with groups along `axis`.

    Axis 0 is the output-channel axis, kept whole; groups run along `axis` (usually 1, the input
    channels). The size of `axis` must divide by group_size.
    """
    if axis == 0:
        raise ValueError("groups run along an input axis (axis >= 1), output channels stay whole")
    n = w.shape[axis]
    if n % group_size:
        raise ValueError(f"axis {axis} has {n} elements, not a multiple of group_size {group_size}")
    moved = w.movedim(axis, 1)  # (out, n, ...)
    return moved.reshape(moved.shape[0], n // group_size, group_size, -1)


def minmax(w: torch.Tensor, scheme: QScheme) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of a tensor at the scheme's granularity (shapes broadcastable for fake quant).

    tensor: scalars. channel: 1-D of length w.shape[axis]. group: (out, n_groups).
    """
    if scheme.granularity == "tensor":
        return w.min(), w.max()
    if scheme.granularity == "channel":
        flat = w.movedim(scheme.axis, 0).reshape(w.shape[scheme.axis], -1)
        return flat.min(1).values, flat.max(1).values
    g = group_view(w, scheme.axis, scheme.group_size)
    return g.amin(dim=(2, 3)), g.amax(dim=(2, 3))
