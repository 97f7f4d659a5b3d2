import numpy as np
import pytest
import torch

from qcore.quant.calibration import compute_range, parse_method, quant_error
from qcore.quant.qparams import QScheme
from qcore.quant.stats import TensorStats

SYM = QScheme(8, symmetric=True, signed=True)
ASYM = QScheme(8, symmetric=False, signed=False)


def stats_of(x: torch.Tensor, chunks: int = 4) -> TensorStats:
    st = TensorStats("t")
    for c in x.chunk(chunks):
        st.update(c)
    return st


@pytest.fixture(scope="module")
def gaussian_with_outliers():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400_000, generator=g)
    x[:40] = torch.randn(40, generator=g).sign() * (20 + 20 * torch.rand(40, generator=g))
    return x


def test_parse_method():
    assert parse_method("max") == ("max", None)
    assert parse_method("percentile:99.9") == ("percentile", 99.9)
    assert parse_method("percentile") == ("percentile", 99.99)
    for bad in ("minmax", "percentile:20", "entropy:3"):
        with pytest.raises(ValueError):
            parse_method(bad)


def test_max_is_observed_range():
    x = torch.tensor([-1.5, 0.3, 4.0])
    r = compute_range(stats_of(x, 1), "max", ASYM)
    assert (r.clip_min, r.clip_max) == (-1.5, 4.0)
    assert compute_range(stats_of(x, 1), "max", SYM).clip_min == -4.0
    g = torch.randn(100_000, generator=torch.Generator().manual_seed(5))
    r = compute_range(stats_of(g), "max", ASYM)
    # only the zero-point rounding of the affine grid can clip a hair off the extremes
    assert r.clip_error < 1e-3 * r.rounding_error


@pytest.mark.parametrize("p", [99.0, 99.9, 99.99])
def test_percentile_matches_numpy(p):
    x = torch.rand(200_000, generator=torch.Generator().manual_seed(1)) * 10 - 2  # uniform [-2, 8]
    st = stats_of(x)
    width = st.histogram().width
    r = compute_range(st, f"percentile:{p}", ASYM)
    lo, hi = np.percentile(x.numpy(), [100 - p, p])
    assert r.clip_min == pytest.approx(lo, abs=2 * width)
    assert r.clip_max == pytest.approx(hi, abs=2 * width)
    rs = compute_range(st, f"percentile:{p}", SYM)
    assert rs.clip_max == pytest.approx(np.percentile(np.abs(x.numpy()), p), abs=2 * width)


def test_entropy_clips_outliers_but_keeps_the_bulk(gaussian_with_outliers):
    st = stats_of(gaussian_with_outliers)
    r = compute_range(st, "entropy", SYM)
    assert 3.0 < r.clip_max < 0.5 * st.absmax


def test_mse_lies_between_the_tails_and_max(gaussian_with_outliers):
    st = stats_of(gaussian_with_outliers)
    r = compute_range(st, "mse", SYM)
    p999 = compute_range(st, "percentile:99.9", SYM)
    assert p999.clip_max < r.clip_max < st.absmax
    assert r.total_error <= compute_range(st, "max", SYM).total_error


def test_mse_minimises_estimated_error_at_low_bits():
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(2))
    st = stats_of(x)
    four = QScheme(4, True, True)
    best = compute_range(st, "mse", four)
    for method in ("max", "percentile:99.99", "entropy"):
        assert best.total_error <= compute_range(st, method, four).total_error + 1e-12


def test_error_estimates_match_measured_quantization_error():
    from qcore.quant.fakequant import fake_quantize

    x = torch.randn(200_000, generator=torch.Generator().manual_seed(3))
    st = stats_of(x)
    r = compute_range(st, "percentile:99.9", ASYM)
    measured = float(((fake_quantize(x, torch.tensor(r.scale), torch.tensor(r.zero_point), 0, 255) - x) ** 2).mean())
    assert r.total_error == pytest.approx(measured, rel=0.15)
    clip, rnd = quant_error(st, r.clip_min, r.clip_max, ASYM)
    assert (clip, rnd) == pytest.approx((r.clip_error, r.rounding_error))


@pytest.mark.parametrize("method", ["max", "percentile:99.99", "entropy", "mse"])
@pytest.mark.parametrize("bits", [2, 4, 6, 8])
@pytest.mark.parametrize("scheme_kw", [dict(symmetric=True, signed=True), dict(symmetric=False, signed=False)])
def test_every_method_every_bit_width(method, bits, scheme_kw):
    x = torch.relu(torch.randn(50_000, generator=torch.Generator().manual_seed(bits)))
    st = stats_of(x)
    scheme = QScheme(bits, **scheme_kw)
    r = compute_range(st, method, scheme)
    assert r.clip_min <= 0.0 < r.clip_max <= st.max * (1 + 1e-6)  # inside what was seen, zero on the grid
    if scheme.symmetric:
        assert r.clip_min == -r.clip_max and r.zero_point == 0
    assert r.scale > 0 and scheme.qmin <= r.zero_point <= scheme.qmax
    assert r.clip_error >= 0 and r.rounding_error > 0


def test_relu_entropy_is_not_fooled_by_the_zero_spike():
    x = torch.relu(torch.randn(200_000, generator=torch.Generator().manual_seed(4)))
    r = compute_range(stats_of(x), "entropy", ASYM)
    assert r.clip_max > 2.5  # without flattening the zero bin the KL search picks ~2.0


def test_asymmetric_entropy_is_not_fooled_by_a_pile_up_at_the_minimum():
    """Normalized images: half the pixels are background at the minimum (-0.81). Folding |x| made the
    KL search clip every bright pixel at 0.81; the asymmetric search keeps the bright range."""
    g = torch.Generator().manual_seed(6)
    x = torch.cat([torch.full((100_000,), -0.81), torch.rand(100_000, generator=g) * 2.83 - 0.81])
    r = compute_range(stats_of(x), "entropy", ASYM)
    assert r.clip_min == pytest.approx(-0.81, abs=1e-3)
    assert r.clip_max > 1.5


def test_entropy_at_4_bits_keeps_both_sides_of_signed_data():
    """A conv output before its residual add, on an asymmetric 4-bit grid: the old search crept up from
    the minimum, stopped in the sparse left tail and clipped every positive value (chance accuracy)."""
    g = torch.Generator().manual_seed(7)
    x = torch.cat([torch.randn(200_000, generator=g), -8 * torch.rand(50, generator=g), 7 * torch.rand(50, generator=g)])
    r = compute_range(stats_of(x), "entropy", QScheme(4, symmetric=False, signed=False))
    assert r.method == "entropy" and r.note == ""
    assert r.clip_min < -1.5 and r.clip_max > 1.5  # the bulk on both sides of zero is kept
    assert r.total_error < 2 * compute_range(stats_of(x), "mse", QScheme(4, symmetric=False, signed=False)).total_error


@pytest.mark.parametrize("scheme", [QScheme(2, True, True), QScheme(2, False, False), QScheme(3, False, False, True)])
def test_entropy_is_refused_below_3_bits_and_mse_is_used_with_the_reason(scheme):
    st = stats_of(torch.randn(50_000, generator=torch.Generator().manual_seed(8)))
    r = compute_range(st, "entropy", scheme)
    mse = compute_range(st, "mse", scheme)
    assert r.method == "mse" and "entropy needs at least 3-bit activations" in r.note
    assert (r.clip_min, r.clip_max) == (mse.clip_min, mse.clip_max)
    assert compute_range(st, "entropy", QScheme(3, True, True)).note == ""  # 3 bits: entropy runs
