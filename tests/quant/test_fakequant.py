import pytest
import torch

from qcore.quant.fakequant import fake_cast, fake_quantize, fake_quantize_reference, fake_quantize_scheme, quantize_to_int
from qcore.quant.qparams import QScheme, compute_qparams, minmax


@pytest.mark.parametrize("qmin,qmax", [(0, 255), (-128, 127), (0, 127), (-8, 7), (0, 3)])
def test_per_tensor_bit_exact_with_torch(qmin, qmax):
    g = torch.Generator().manual_seed(qmax)
    for _ in range(50):
        x = torch.randn(4096, generator=g) * float(torch.rand(1, generator=g) * 20)
        scale = float(torch.rand(1, generator=g)) * 0.2 + 1e-5
        zp = int(torch.randint(qmin, qmax + 1, (1,), generator=g))
        ours = fake_quantize_reference(x, torch.tensor(scale), torch.tensor(zp), qmin, qmax)
        ref = torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax)
        assert torch.equal(ours, ref)
        assert torch.equal(fake_quantize(x, torch.tensor(scale), torch.tensor(zp), qmin, qmax), ref)


@pytest.mark.parametrize("axis", [0, 1, 3])
@pytest.mark.parametrize("symmetric", [True, False])
def test_per_channel_bit_exact_with_torch(axis, symmetric):
    g = torch.Generator().manual_seed(axis)
    x = torch.randn(8, 6, 5, 4, generator=g) * torch.rand(8, 6, 5, 4, generator=g) * 10
    scheme = QScheme(8, symmetric, True, granularity="channel", axis=axis)
    scale, zp = compute_qparams(*minmax(x, scheme), scheme)
    ours = fake_quantize_reference(x, scale, zp, scheme.qmin, scheme.qmax, axis=axis)
    ref = torch.fake_quantize_per_channel_affine(x, scale, zp, axis, scheme.qmin, scheme.qmax)
    assert torch.equal(ours, ref)
    assert torch.equal(fake_quantize_scheme(x, scale, zp, scheme), ref)


@pytest.mark.parametrize("fq", [fake_quantize, fake_quantize_reference])
def test_straight_through_gradient_masks_clipped_values(fq):
    x = torch.tensor([-10.0, -0.5, 0.0, 0.26, 10.0], requires_grad=True)
    y = fq(x, torch.tensor(0.01), torch.tensor(0), -128, 127)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    ref_x = x.detach().clone().requires_grad_(True)
    torch.fake_quantize_per_tensor_affine(ref_x, 0.01, 0, -128, 127).sum().backward()
    assert torch.equal(x.grad, ref_x.grad)


def test_per_group_has_one_scale_per_group():
    w = torch.ones(2, 8)
    w[0, :4] *= 0.01  # a small-magnitude group next to a large one in the same row
    w[0, 4:] *= 100
    scheme = QScheme(4, True, True, granularity="group", axis=1, group_size=4)
    scale, zp = compute_qparams(*minmax(w, scheme), scheme)
    out = fake_quantize_scheme(w, scale, zp, scheme)
    assert torch.allclose(out, w, rtol=0.2)  # per-group keeps the small group; per-row would zero it
    per_row = QScheme(4, True, True, granularity="channel", axis=0)
    s2, z2 = compute_qparams(*minmax(w, per_row), per_row)
    assert fake_quantize_scheme(w, s2, z2, per_row)[0, :4].abs().max() == 0


def test_integer_codes_in_range():
    x = torch.randn(100) * 5
    scheme = QScheme(4, False, False)
    scale, zp = compute_qparams(x.min(), x.max(), scheme)
    q = quantize_to_int(x, scale, zp, scheme)
    assert q.min() >= 0 and q.max() <= 15 and q.unique().numel() > 8


def test_fake_cast_formats():
    x = torch.tensor([1.0 + 2**-12, 70000.0], requires_grad=True)
    assert fake_cast(x, "fp32") is x
    half = fake_cast(x, "fp16")
    assert half[0] == 1.0 and torch.isinf(half[1])  # fp16: 10-bit mantissa, max 65504
    bf = fake_cast(x, "bf16")
    assert bf[0] == 1.0 and bf[1] == 70144.0  # bf16: 7-bit mantissa, fp32 range
    bf.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("qmin,qmax", [(0, 255), (-128, 127)])
def test_the_inference_path_is_bit_exact_with_torchs_fake_quant_ties_included(qmin, qmax):
    """Without gradients the 8-bit grids run torch's quantize/dequantize kernels instead: same bits."""
    g = torch.Generator().manual_seed(1)
    for scale in (0.0123, 0.02, 1 / 3, 0.5, 7.1e-3):
        zp = (qmin + qmax + 1) // 2 - 20
        ties = (torch.arange(-300, 300) + 0.5) * scale
        # beyond ~2^31 steps torch's fake-quant kernel overflows its integer cast (-1e30 lands on qmax);
        # quantize_per_tensor clamps correctly. Activations that large are refused long before (robustness).
        x = torch.cat([torch.randn(500_000, generator=g) * 3, ties, torch.tensor([1e6, -1e6, 0.0])])
        ref = torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax)
        with torch.no_grad():
            assert torch.equal(fake_quantize(x, torch.tensor(scale), torch.tensor(zp), qmin, qmax), ref), scale
