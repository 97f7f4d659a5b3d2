"""NF4 / FP4 / INT4 fake quantizers: the level sets, round-to-nearest and one absmax scale per block."""

import pytest
import torch

from qcore.quant.lowbit import (FP4_LEVELS, INT4_LEVELS, NF4_LEVELS, fake_quantize_lowbit, nf4_levels_from_normal,
                                quantize_blocks, round_to_levels)


def test_nf4_is_qloras_normal_quantile_construction():
    assert len(NF4_LEVELS) == 16 and NF4_LEVELS[0] == -1.0 and NF4_LEVELS[-1] == 1.0 and 0.0 in NF4_LEVELS
    assert torch.allclose(nf4_levels_from_normal(), torch.tensor(NF4_LEVELS, dtype=torch.float64), atol=1e-6)
    steps = torch.tensor(NF4_LEVELS).diff()
    assert steps[7] < steps[0] and steps[7] < steps[-1]  # crowded near zero, sparse in the tails


def test_fp4_e2m1_levels():
    assert len(FP4_LEVELS) == 15  # +0 and -0 are one value
    assert sorted({abs(v) * 6 for v in FP4_LEVELS}) == pytest.approx([0, 0.5, 1, 1.5, 2, 3, 4, 6])
    assert len(INT4_LEVELS) == 15 and INT4_LEVELS[8] * 7 == pytest.approx(1.0)


def test_round_to_nearest_level():
    x = torch.tensor([-2.0, -0.9, 0.04, 0.3, 0.95, 5.0])
    assert round_to_levels(x, FP4_LEVELS).tolist() == pytest.approx([-1.0, -1.0, 0.0, 1 / 3, 1.0, 1.0])
    nf4 = torch.tensor(NF4_LEVELS)
    y = torch.linspace(-1, 1, 1001)
    q = round_to_levels(y, NF4_LEVELS)
    best = (y[:, None] - nf4[None]).abs().min(1).values
    assert torch.allclose((y - q).abs(), best)  # no level is nearer than the chosen one


def test_one_absmax_scale_per_block():
    w = torch.cat([torch.full((64,), 0.01), torch.full((64,), 10.0)]).reshape(2, 64)
    w[0, 3], w[1, 5] = -0.02, -20.0
    q, scale = quantize_blocks(w, NF4_LEVELS, 64)
    assert scale.tolist() == pytest.approx([0.02, 20.0])
    assert q[0, 3] == pytest.approx(-0.02) and q[1, 5] == pytest.approx(-20.0)  # the block maximum is exact
    _, per_channel = quantize_blocks(w, NF4_LEVELS, None)
    assert per_channel.shape == (2,)
    # one scale over both blocks would flush the small block to zero; per block it survives
    assert (q[0].abs() > 0).all()


def test_formats_on_gaussian_weights_and_errors():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 32, 3, 3, generator=g)
    errs = {f: float((fake_quantize_lowbit(w, f) - w).pow(2).mean()) for f in ("int4", "nf4", "fp4")}
    assert errs["nf4"] < errs["int4"] and errs["nf4"] < errs["fp4"]  # NF4 is made for normal weights
    assert fake_quantize_lowbit(w, "nf4").shape == w.shape
    odd = torch.randn(70, generator=g)  # a last block shorter than 64
    assert fake_quantize_lowbit(odd, "fp4").shape == (70,)
    with pytest.raises(ValueError, match="unknown 4-bit format"):
        fake_quantize_lowbit(w, "int3")
