"""Weight rounding that minimizes each layer's output error: AdaRound and GPTQ.

Both go layer by layer in graph order. Each layer's input is captured from the sim as it is at that
moment (earlier layers already rounded, activations quantized once ranges exist), so later layers
compensate for the error of earlier ones. Both produce weights that lie exactly on the layer's grid
(scale from the original weights' range) and pin that grid, so quantizing them again, and exporting
them to real INT8, keeps their rounding.

- AdaRound (Nagel et al. 2020): a learned per-weight choice between rounding down and up. The soft
  rounding h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1) is trained to reproduce the FP32
  layer's output on calibration inputs, with the regularizer sum(1 - |2h - 1|^beta) pushing h to 0 or
  1; beta is annealed from 20 to 2 after a warm-up without it (the paper's schedule).
- GPTQ (Frantar et al. 2023): columns quantized one at a time, each column's error spread over the
  not-yet-quantized columns with the inverse Hessian H = 2 X^T X of the layer's inputs (Optimal Brain
  Quantization). Depthwise and grouped convolutions keep round-to-nearest (each output channel sees
  its own input channel: there is nothing to compensate across).
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F
from torch import nn

from qcore.quant.progress import Msg, Progress, silent
from qcore.quant.quantsim import QuantSim, QuantWeightLayer, image_count
from qcore.quant.recovery.graph import capture_inputs, first_images, run_hooked
from qcore.quant.recovery.reference import fp32_reference, remember

__all__ = ["adaround", "gptq", "SoftRounding", "annealed_beta", "output_error", "rounded_layers", "ZETA", "GAMMA"]

ZETA, GAMMA = 1.1, -0.1
PROBE = 64  # images on which each layer's output MSE (round-to-nearest vs the step's rounding) is reported
# AdaRound optimises each layer on its captured inputs and outputs, all in memory at once. For an ImageNet
# model's early layers that is megabytes per image, so a layer uses as many calibration images as fit in this
# budget (at least one); the report says how many each layer used.
CAPTURE_BUDGET_BYTES = int(float(os.environ.get("QX_CAPTURE_BUDGET_MB", "256")) * 2**20)
# GPTQ's Hessian of each layer comes from the inputs of at most 256 images at 3x224x224 (the paper uses 128
# sequences): one pass per layer over every calibration image made the step's cost images x layers.
HESSIAN_VALUES = 256 * 3 * 224 * 224
# The Hessian is summed over the im2col of a few images at a time: a batch of 32 at 224x224 is 462 MB in float64 for
# ResNet50's first 3x3 convolutions (its peak was 4363 MB at 64 images with whole batches).
IM2COL_BYTES = 64 * 2**20


def _layer_out(layer: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, w, layer.bias)
    return F.linear(x, w, layer.bias)


def _grid(wl: QuantWeightLayer):
    """(scheme, scale and zero-point broadcastable to the weight) of a layer's weight grid."""
    w = wl.layer.weight.detach()
    scheme = wl.effective_scheme(w)
    scale, zp = wl.grid(w, scheme)
    shape = (-1,) + (1,) * (w.dim() - 1) if scheme.granularity == "channel" else ()
    return scheme, scale, zp, scale.reshape(shape).to(w.dtype), zp.reshape(shape).to(w.dtype)


def rounded_layers(sim: QuantSim, include_grouped: bool = True) -> list[str]:
    """The layers whose weights a rounding step sets: enabled, integer, per-tensor or per-channel scales."""
    return [n for n, wl in sim.weight_layers.items() if wl.enabled and wl.cfg.weight_dtype == "int"
            and wl.weight_scheme.granularity in ("tensor", "channel")
            and (include_grouped or getattr(wl.layer, "groups", 1) == 1)]


def _store(wl: QuantWeightLayer, w_int: torch.Tensor, scheme, scale, zp, s, z) -> None:
    with torch.no_grad():
        wl.layer.weight.copy_((w_int - z) * s)
    wl.pin_grid(scheme, scale, zp)


def _soft(v: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)


class SoftRounding:
    """One layer's learnable rounding (AdaRound's): h(v) in [0, 1] added to the floor of the weight on its grid,
    starting where h(v) equals the float weight's fraction. Shared by AdaRound and block reconstruction."""

    def __init__(self, wl: QuantWeightLayer):
        self.wl = wl
        self.scheme, self.scale, self.zp, self.s, self.z = _grid(wl)
        w = wl.layer.weight.detach()
        self.floor = torch.floor(w / self.s)
        rest = (w / self.s - self.floor).clamp(1e-4, 1 - 1e-4)
        self.v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
        self.nearest = torch.clamp(torch.round(w / self.s) + self.z, self.scheme.qmin, self.scheme.qmax)

    def _levels(self, hard: bool) -> torch.Tensor:
        h = (_soft(self.v) >= 0.5).to(self.floor.dtype) if hard else _soft(self.v)
        return torch.clamp(self.floor + h + self.z, self.scheme.qmin, self.scheme.qmax)

    def weight(self, hard: bool = False) -> torch.Tensor:
        """The weight as rounded now: soft (trainable), or hard (each weight up or down)."""
        return (self._levels(hard) - self.z) * self.s

    def nearest_weight(self) -> torch.Tensor:
        return (self.nearest - self.z) * self.s

    def regularizer(self, beta: float) -> torch.Tensor:
        return (1 - (2 * _soft(self.v) - 1).abs().pow(beta)).sum()

    def store(self) -> int:
        """Hard-round into the layer's weight (its grid pinned); returns how many weights left round-to-nearest."""
        hard = self._levels(hard=True).detach()
        _store(self.wl, hard, self.scheme, self.scale, self.zp, self.s, self.z)
        return int((hard != self.nearest).sum())


def output_error(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """AdaRound's loss: the squared error at each position summed over channels (per row for a linear), averaged."""
    diff = out - target
    return diff.pow(2).sum(1 if diff.dim() == 4 else -1).mean()


def annealed_beta(it: int, iters: int) -> float | None:
    """The regularizer's beta at iteration `it`: none during the first 20% (warm-up), then 20 down to 2."""
    warm = int(0.2 * iters)
    return None if it < warm else 20 + (2 - 20) * (it - warm) / max(1, iters - warm)


def _adaround_layer(wl: QuantWeightLayer, x_in: torch.Tensor, target: torch.Tensor, iters: int, reg: float,
                    batch: int, gen: torch.Generator) -> dict:
    layer, rounding = wl.layer, SoftRounding(wl)
    opt = torch.optim.Adam([rounding.v], lr=1e-2)
    for it in range(iters):
        idx = torch.randint(0, len(x_in), (min(batch, len(x_in)),), generator=gen)
        loss = output_error(_layer_out(layer, x_in[idx], rounding.weight()), target[idx])
        if (beta := annealed_beta(it, iters)) is not None:
            loss = loss + reg * rounding.regularizer(beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        probe = x_in[:PROBE]
        mse_rtn = F.mse_loss(_layer_out(layer, probe, rounding.nearest_weight()), target[: len(probe)]).item()
        mse_ada = F.mse_loss(_layer_out(layer, probe, rounding.weight(hard=True)), target[: len(probe)]).item()
    flipped = rounding.store()
    return {"flipped": flipped, "weights": rounding.v.numel(), "mse_nearest": mse_rtn, "mse": mse_ada}


def _layer_by_layer(sim: QuantSim, names: list[str], label: str, fn, progress: Progress | None) -> dict:
    """Run `fn(name, weight_layer)` on each layer in graph order, with progress and seconds per layer;
    cached quantized weights are dropped after each, so the next layer's inputs see this one's rounding."""
    say, out = progress or silent, {}
    for i, name in enumerate(names):
        start = time.perf_counter()
        say(i / len(names), Msg("{method} {layer} ({i}/{n})", method=label, layer=name, i=i + 1, n=len(names)))
        out[name] = fn(name, sim.weight_layers[name])
        out[name]["seconds"] = round(time.perf_counter() - start, 3)
        sim.weights_changed()
    return {"layers": out}


def _first_images(batches, k: int):
    """The first `k` images of `batches` (a `Batches` sequence or a list of tensors), batched as they were."""
    if hasattr(batches, "first"):
        return batches.first(k)
    out, n = [], 0
    for x in batches:
        out.append(x[: k - n])
        n += len(out[-1])
        if n >= k:
            break
    return out


def _images_that_fit(sim: QuantSim, name: str, batches) -> int:
    """How many calibration images AdaRound (and GPTQ's error probe) can hold for layer `name`: its quantized and
    FP32 inputs and its target output, per image, measured on one image, within CAPTURE_BUDGET_BYTES."""
    x = capture_inputs(sim, [name], _first_images(batches, 1))[name]
    wl = sim.weight_layers[name]
    with torch.no_grad():
        per_image = 2 * x.numel() * x.element_size() + _layer_out(wl.layer, x, wl.layer.weight).numel() * 4
    return max(1, min(image_count(batches), CAPTURE_BUDGET_BYTES // max(1, per_image)))


def _fp32_target(sim: QuantSim, name: str, batches: list[torch.Tensor]) -> torch.Tensor:
    """Layer `name`'s output in the FP32 network (every earlier layer with its weights before rounding): what
    AdaRound fits, so each layer also makes up for the error the rounded layers before it left."""
    with fp32_reference(sim):
        layer = sim.weight_layers[name].layer
        return _layer_out(layer, capture_inputs(sim, [name], batches)[name], layer.weight)


def adaround(sim: QuantSim, batches: list[torch.Tensor], iters: int = 500, reg: float = 0.01, batch: int = 32,
             seed: int = 0, progress: Progress | None = None) -> dict:
    """AdaRound every integer-weight layer in graph order; returns per-layer flips, MSEs and seconds."""
    gen = torch.Generator().manual_seed(seed)

    def one(name: str, wl: QuantWeightLayer) -> dict:
        used = _first_images(batches, _images_that_fit(sim, name, batches))
        x_q = capture_inputs(sim, [name], used)[name]
        target = _fp32_target(sim, name, used)
        remember(sim, name)
        with torch.enable_grad():
            return {**_adaround_layer(wl, x_q, target, iters, reg, batch, gen), "images": len(x_q)}

    return _layer_by_layer(sim, rounded_layers(sim), "AdaRound", one, progress)


def _columns(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows of what each weight row multiplies (im2col for a convolution)."""
    if isinstance(layer, nn.Conv2d):
        cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


@torch.no_grad()
def _hessian(sim: QuantSim, name: str, batches: list[torch.Tensor]) -> torch.Tensor:
    """2 X^T X / n of the layer's inputs as the sim computes them now, summed batch by batch (an im2col of
    every calibration image at once would not fit in memory for ImageNet-size layers)."""
    layer, acc = sim.weight_layers[name].layer, {"h": None, "n": 0}

    def hook(m, i, o):
        x = i[0].detach()
        per_image = _columns(layer, x[:1]).numel() * 8  # bytes of one image's im2col in float64
        for part in x.split(max(1, IM2COL_BYTES // per_image)):
            cols = _columns(layer, part).double()
            acc["h"] = cols.T @ cols + (acc["h"] if acc["h"] is not None else 0)
            acc["n"] += len(cols)

    run_hooked(sim, {name: hook}, batches, stop_early=True)
    return 2 * acc["h"] / acc["n"]


@torch.no_grad()
def _gptq_layer(wl: QuantWeightLayer, h: torch.Tensor, damp: float, probe: tuple) -> dict:
    layer = wl.layer
    scheme, scale, zp, s, z = _grid(wl)
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1).double().clone()
    s2 = s.reshape(-1, 1).double() if s.dim() else s.double()
    z2 = z.reshape(-1, 1).double() if z.dim() else z.double()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * torch.diag(h).mean() * torch.eye(len(h), dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    for i in range(w.shape[1]):
        col = w[:, i: i + 1]
        qi = torch.clamp(torch.round(col / s2) + z2, scheme.qmin, scheme.qmax)
        q[:, i: i + 1] = qi
        err = (col - (qi - z2) * s2) / hinv[i, i]
        w[:, i:] -= err @ hinv[i: i + 1, i:]
    nearest = torch.clamp(torch.round(layer.weight.detach().reshape(q.shape).double() / s2) + z2, scheme.qmin, scheme.qmax)
    w_int = q.reshape(layer.weight.shape).to(layer.weight.dtype)
    x_q, target = probe
    mse_rtn = F.mse_loss(_layer_out(layer, x_q, (nearest.reshape(w_int.shape).to(w_int.dtype) - z) * s), target).item()
    _store(wl, w_int, scheme, scale, zp, s, z)
    mse = F.mse_loss(_layer_out(layer, x_q, layer.weight), target).item()
    return {"flipped": int((q != nearest).sum()), "weights": q.numel(), "mse_nearest": mse_rtn, "mse": mse}


def gptq(sim: QuantSim, batches: list[torch.Tensor], damp: float = 0.01, progress: Progress | None = None) -> dict:
    """GPTQ every ungrouped integer-weight layer in graph order; returns per-layer changes and seconds."""

    def one(name: str, wl: QuantWeightLayer) -> dict:
        # batch by batch as they come (one batch of them all ran the network's forward on 64 images at once)
        probe = list(_first_images(batches, min(PROBE, _images_that_fit(sim, name, batches))))
        x_q = capture_inputs(sim, [name], probe)[name]
        target = _fp32_target(sim, name, probe)
        remember(sim, name)
        return _gptq_layer(wl, _hessian(sim, name, first_images(batches, HESSIAN_VALUES)), damp, (x_q, target))

    return _layer_by_layer(sim, rounded_layers(sim, include_grouped=False), "GPTQ", one, progress)
