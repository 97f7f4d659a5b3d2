"""Quantize-dequantize ("fake quantization") with a straight-through gradient.

Forward: `(clamp(round(x * (1 / scale)) + zero_point, qmin, qmax) - zero_point) * scale`, with
round-half-to-even and the float32 reciprocal. `fake_quantize_reference` spells the formula out;
torch's `fake_quantize_per_tensor_affine` / `fake_quantize_per_channel_affine` kernels compute it
bit for bit (the tests check that), so per-tensor and per-channel quantization run on them, and
the reference serves per-group scales.

Backward (straight-through estimator): the gradient passes unchanged where the value was inside
the clip range and is zero where it was clipped, as in torch's kernels.

Float formats (fp16, bf16) are simulated by a round trip through the narrower dtype.
"""

from __future__ import annotations

import warnings

import torch

from qcore.quant.qparams import QScheme, group_view

__all__ = ["fake_quantize", "fake_quantize_reference", "fake_quantize_scheme", "fake_cast", "quantize_to_int"]


class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        q = torch.round(x * (1.0 / scale)) + zero_point
        mask = (q >= qmin) & (q <= qmax)
        ctx.save_for_backward(mask)
        return (torch.clamp(q, qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None, None


def _broadcast(param: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * x.dim()
    shape[axis] = -1
    return param.reshape(shape)


def fake_quantize_reference(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, axis: int | None = None
) -> torch.Tensor:
    """The formula itself, op by op (what per-group quantization runs, and what the tests pin
    torch's fused kernels to)."""
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zero_point = torch.as_tensor(zero_point).to(torch.float32)
    if axis is not None and scale.numel() > 1:
        scale, zero_point = _broadcast(scale, x, axis), _broadcast(zero_point, x, axis)
    return _FakeQuantSTE.apply(x, scale, zero_point, qmin, qmax)


# torch's quantize/dequantize kernels for the two 8-bit grids; in inference they replace
# fake_quantize_per_tensor_affine, which also computes the gradient mask: 2.3x faster per call,
# bit-exact (tested, ties included), sensitivity sweep 18.8 s -> 14.3 s (fm_resnet, 1000 images).
_QUANTIZED_DTYPES = {(0, 255): torch.quint8, (-128, 127): torch.qint8}
warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*deprecated.*", category=UserWarning)


def _inference_fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int):
    """Quantize and dequantize in one vectorized pass each, or None where that does not apply
    (gradients wanted, another grid, a tensor that is not float32)."""
    dtype = _QUANTIZED_DTYPES.get((qmin, qmax))
    if dtype is None or torch.is_grad_enabled() or x.dtype != torch.float32:
        return None
    return torch.quantize_per_tensor(x, float(scale), int(zero_point), dtype).dequantize()


def fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, axis: int | None = None
) -> torch.Tensor:
    """Fake-quantize `x`; per-tensor when `axis` is None, else one scale per slice along `axis`.

    Runs torch's fused kernels, which compute the reference formula bit for bit (tested) in one
    pass instead of six, with the same straight-through gradient. On a GPU it runs the reference
    itself, whose IEEE reciprocal, product and half-to-even rounding give the CPU's codes: a
    symmetric grid puts each channel's extreme weight exactly on a tie (-7.5 steps at 4 bits), where
    one ulp moves a weight a whole step, and the fused CUDA kernels' arithmetic is not pinned to the
    CPU's by any test here (the isolated per-op check in tests/train/test_cuda.py checks this path).
    """
    if x.is_cuda:
        return fake_quantize_reference(x, scale, zero_point, qmin, qmax, axis)
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zero_point = torch.as_tensor(zero_point).to(torch.int32)
    if axis is None or scale.numel() == 1:
        fast = _inference_fake_quantize(x, scale, zero_point, qmin, qmax)
        if fast is not None:
            return fast
    if axis is not None and scale.numel() > 1:
        return torch.fake_quantize_per_channel_affine(x, scale.reshape(-1), zero_point.reshape(-1), axis, qmin, qmax)
    return torch.fake_quantize_per_tensor_affine(x, scale.reshape(()), zero_point.reshape(()), qmin, qmax)


def fake_quantize_scheme(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, scheme: QScheme) -> torch.Tensor:
    """Fake-quantize `x` with parameters of the scheme's granularity (from `compute_qparams`)."""
    if scheme.granularity == "tensor":
        return fake_quantize(x, scale, zero_point, scheme.qmin, scheme.qmax)
    if scheme.granularity == "channel":
        return fake_quantize(x, scale, zero_point, scheme.qmin, scheme.qmax, axis=scheme.axis)
    g = group_view(x, scheme.axis, scheme.group_size)  # (out, groups, group_size, rest)
    s = scale.reshape(g.shape[0], g.shape[1], 1, 1)
    z = zero_point.to(torch.float32).reshape(g.shape[0], g.shape[1], 1, 1)
    out = _FakeQuantSTE.apply(g, s, z, scheme.qmin, scheme.qmax)
    moved_shape = list(x.movedim(scheme.axis, 1).shape)
    return out.reshape(moved_shape).movedim(1, scheme.axis)


def quantize_to_int(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, scheme: QScheme) -> torch.Tensor:
    """The integer codes (as int32) fake quantization rounds to: what a real INT8 kernel stores."""
    if scheme.granularity == "group":
        raise NotImplementedError("integer codes are only exposed for tensor and channel granularity")
    axis = scheme.axis if scheme.granularity == "channel" else None
    s = torch.as_tensor(scale, dtype=torch.float32)
    z = torch.as_tensor(zero_point).to(torch.float32)
    if axis is not None:
        s, z = _broadcast(s, x, axis), _broadcast(z, x, axis)
    return torch.clamp(torch.round(x * (1.0 / s)) + z, scheme.qmin, scheme.qmax).to(torch.int32)


def fake_cast(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Round `x` to fp16 or bf16 and back (fp32 is the identity), with a straight-through gradient."""
    if fmt == "fp32":
        return x
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[fmt]
    return x + (x.to(dtype).to(x.dtype) - x).detach()
