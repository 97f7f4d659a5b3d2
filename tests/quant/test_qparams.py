import pytest
import torch
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from qcore.quant.qparams import QScheme, compute_qparams, group_view, minmax, qrange


@pytest.mark.parametrize("bits,signed,reduce,expected", [
    (8, True, False, (-128, 127)), (8, False, False, (0, 255)), (8, False, True, (0, 127)),
    (4, True, False, (-8, 7)), (2, False, False, (0, 3)), (7, True, True, (-32, 31)), (16, False, False, (0, 65535)),
])
def test_qrange(bits, signed, reduce, expected):
    assert qrange(bits, signed, reduce) == expected


@pytest.mark.parametrize("bits", [1, 17, 0, 32])
def test_bits_out_of_range_are_refused(bits):
    with pytest.raises(ValueError, match="bits"):
        QScheme(bits=bits)


def test_group_needs_size():
    with pytest.raises(ValueError, match="group_size"):
        QScheme(granularity="group")


@pytest.mark.parametrize("symmetric,dtype,qscheme", [
    (True, torch.qint8, torch.per_tensor_symmetric),
    (False, torch.quint8, torch.per_tensor_affine),
    (True, torch.quint8, torch.per_tensor_symmetric),
])
def test_matches_torch_observer(symmetric, dtype, qscheme):
    x = torch.randn(1000) * 3 + 0.7
    obs = MinMaxObserver(dtype=dtype, qscheme=qscheme)
    obs(x)
    ref_scale, ref_zp = obs.calculate_qparams()
    scheme = QScheme(8, symmetric=symmetric, signed=dtype == torch.qint8)
    scale, zp = compute_qparams(x.min(), x.max(), scheme)
    assert torch.equal(scale.reshape(1), ref_scale)
    assert int(zp) == int(ref_zp)


def test_per_channel_matches_torch_observer():
    w = torch.randn(16, 8, 3, 3) * torch.linspace(0.01, 5, 16).view(-1, 1, 1, 1)
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    obs(w)
    ref_scale, ref_zp = obs.calculate_qparams()
    scheme = QScheme(8, True, True, granularity="channel", axis=0)
    scale, zp = compute_qparams(*minmax(w, scheme), scheme)
    assert torch.equal(scale, ref_scale)
    assert torch.equal(zp.long(), ref_zp.long())


def test_range_always_contains_zero_and_zero_is_exact():
    scheme = QScheme(8, symmetric=False, signed=False)
    scale, zp = compute_qparams(2.0, 5.0, scheme)  # all-positive data: range widened to [0, 5]
    assert float(scale) == pytest.approx(5.0 / 255)
    assert int(zp) == 0


def test_degenerate_range_gets_eps_scale():
    scale, _ = compute_qparams(0.0, 0.0, QScheme())
    assert float(scale) > 0


def test_group_minmax_shapes_and_values():
    w = torch.arange(2 * 8 * 1 * 1, dtype=torch.float32).view(2, 8, 1, 1)
    scheme = QScheme(4, granularity="group", axis=1, group_size=4)
    lo, hi = minmax(w, scheme)
    assert lo.shape == (2, 2)
    assert lo.tolist() == [[0, 4], [8, 12]]
    assert hi.tolist() == [[3, 7], [11, 15]]
    with pytest.raises(ValueError, match="multiple"):
        group_view(torch.zeros(2, 6), 1, 4)
