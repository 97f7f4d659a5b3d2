"""4-bit weight formats as fake quantizers: INT4, NF4 (QLoRA) and FP4 E2M1, absmax-scaled per block.

Why written here: the libraries that implement NF4/FP4 (bitsandbytes, torchao) quantize Linear
weights for CUDA kernels or for their own tensor subclasses; none of them rounds an arbitrary
CPU tensor (a 4-D conv weight included) to these level sets and back. What the Learn page needs
is exactly that round trip, so each format is the same three steps: cut the flattened weight into
blocks, divide each block by its absolute maximum (so the block lands in [-1, 1]), and round every
value to the nearest of the format's 16 (or 15) levels.
"""

from __future__ import annotations

import torch

__all__ = ["NF4_LEVELS", "FP4_E2M1_VALUES", "FP4_LEVELS", "INT4_LEVELS", "LOWBIT_FORMATS", "nf4_levels_from_normal",
           "round_to_levels", "quantize_blocks", "fake_quantize_lowbit"]

# QLoRA's NormalFloat4 (Dettmers et al. 2023, bitsandbytes `create_normal_map`): quantiles of N(0, 1)
# scaled to [-1, 1], 8 positive and 7 negative levels plus an exact zero.
NF4_LEVELS = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
              -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
              0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
              0.7229568362236023, 1.0)
# FP4 E2M1 (OCP microscaling spec): 1 sign, 2 exponent, 1 mantissa bit; +0 and -0 are one value.
FP4_E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
FP4_LEVELS = tuple(sorted({s * v / 6.0 + 0.0 for v in FP4_E2M1_VALUES for s in (-1.0, 1.0)}))  # + 0.0: no -0.0
# Symmetric INT4 with an absmax scale: integers -7..7 over 7 (-8 stays unused, as a symmetric grid does).
INT4_LEVELS = tuple(i / 7.0 for i in range(-7, 8))
LOWBIT_FORMATS = {"int4": INT4_LEVELS, "nf4": NF4_LEVELS, "fp4": FP4_LEVELS}


def nf4_levels_from_normal(offset: float = 0.9677083) -> torch.Tensor:
    """QLoRA's construction of the NF4 levels from normal quantiles (the check that NF4_LEVELS is it):
    8 quantiles for the positive half, 7 for the negative, zero, all divided by the largest."""
    half = torch.distributions.Normal(0.0, 1.0)
    pos = half.icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -half.icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    return values / values.abs().max()


def round_to_levels(x: torch.Tensor, levels: tuple[float, ...] | torch.Tensor) -> torch.Tensor:
    """Each value of `x` replaced by the nearest level (ties go to the lower level); levels sorted."""
    lv = torch.as_tensor(levels, dtype=x.dtype)
    mid = (lv[1:] + lv[:-1]) / 2
    return lv[torch.bucketize(x.contiguous(), mid)]


def quantize_blocks(w: torch.Tensor, levels, block_size: int | None = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(w rounded to `levels` times each block's absmax, the absmax scales). Blocks are `block_size`
    consecutive values of the flattened tensor (QLoRA's layout; the last block may be shorter), or one
    block per output channel when `block_size` is None."""
    flat = w.detach().reshape(w.shape[0], -1) if block_size is None else w.detach().reshape(-1)
    if block_size is None:
        rows = flat
    else:
        pad = (-flat.numel()) % block_size
        rows = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, block_size)
    scale = rows.abs().amax(1, keepdim=True)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = round_to_levels(rows / safe, levels) * safe
    out = q.reshape(-1)[: w.numel()] if block_size is not None else q
    return out.reshape(w.shape), scale.squeeze(1)


def fake_quantize_lowbit(w: torch.Tensor, fmt: str, block_size: int | None = 64) -> torch.Tensor:
    """`w` through one of LOWBIT_FORMATS ("int4", "nf4", "fp4") and back, blocks as in quantize_blocks."""
    if fmt not in LOWBIT_FORMATS:
        raise ValueError(f"unknown 4-bit format {fmt!r}; choose from {', '.join(LOWBIT_FORMATS)}")
    return quantize_blocks(w, LOWBIT_FORMATS[fmt], block_size)[0]
