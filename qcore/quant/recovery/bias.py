"""Empirical bias correction and SmoothQuant.

Bias correction (Nagel et al. 2019, empirical form as in AIMET): quantized weights shift the mean of
a layer's output, and the shift adds up layer after layer. On calibration data, in graph order,
each layer's mean output in the quantized sim is compared with the FP32 model's, per output channel,
and the difference is taken out of the layer's bias. Done sequentially, each correction sees the
corrected layers before it. (The analytic form from BN statistics is not implemented: the empirical
one needs only the calibration images every run has anyway.)

SmoothQuant (Xiao et al. 2023): a Linear's input channels j with outliers are divided by
s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) and its weight columns multiplied by s_j; the division is
folded into the LayerNorm that produces X (its weight and bias), so the function is unchanged and the
activation range the per-tensor quantizer must cover shrinks. Applies to LayerNorm -> Linear pairs.
"""

from __future__ import annotations

import torch
from torch import nn

from qcore.quant.progress import Msg, Progress, silent
from qcore.quant.quantsim import QuantSim
from qcore.quant.recovery.graph import first_images, norm_linear_pairs, run_hooked
from qcore.quant.recovery.reference import fp32_reference, remember

__all__ = ["correct_bias", "smooth"]


def _channel_mean(y: torch.Tensor) -> torch.Tensor:
    return y.mean((0, 2, 3)) if y.dim() == 4 else y.reshape(-1, y.shape[-1]).mean(0)


@torch.no_grad()
def _mean_outputs(sim: QuantSim, names: list[str], batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each named layer's mean output per channel over `batches` (accumulated, never stored)."""
    sums: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(names, 0)

    def hook(n):
        def add(m, i, o):
            sums[n] = sums.get(n, 0) + _channel_mean(o) * len(o)
            counts[n] += len(o)
        return add

    run_hooked(sim, {n: hook(n) for n in names}, batches, stop_early=True)
    return {n: sums[n] / counts[n] for n in names}


# Input values the per-channel means are taken over: 256 images at 3x224x224 (all of a Fashion-MNIST calibration
# set). Each layer's correction is a pass over these images up to that layer, so the cost is images x layers:
# mobilenet_v2 at 224x224 on 1024 images had corrected 2 of its 53 layers after 9 minutes on 2 cores. A mean over
# 256 images is over millions of values per channel already.
BIAS_VALUES = 256 * 3 * 224 * 224


@torch.no_grad()
def correct_bias(sim: QuantSim, batches: list[torch.Tensor], progress: Progress | None = None) -> dict:
    """Correct every quantized layer's bias in graph order (the sim must be calibrated) from the per-channel means
    over the first images of `batches` (at most BIAS_VALUES input values); returns the shifts and how many images they came from."""
    say = progress or silent
    batches = first_images(batches, BIAS_VALUES)
    names = [n for n, wl in sim.weight_layers.items() if wl.enabled]
    with fp32_reference(sim):  # the FP32 network, also where AdaRound/GPTQ already rounded the weights
        reference = _mean_outputs(sim, names, batches)
    shifts = {}
    for i, name in enumerate(names):
        say(i / len(names), Msg("bias correction {layer} ({i}/{n})", layer=name, i=i + 1, n=len(names)))
        delta = _mean_outputs(sim, [name], batches)[name] - reference[name]
        layer = sim.weight_layers[name].layer
        remember(sim, name)
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros_like(delta), requires_grad=False)
        layer.bias.sub_(delta)
        shifts[name] = {"mean_abs_shift": round(float(delta.abs().mean()), 6), "max_abs_shift": round(float(delta.abs().max()), 6)}
    return {"layers": shifts, "images": sum(len(x) for x in batches) if isinstance(batches, list) else batches.count}


@torch.no_grad()
def smooth(sim: QuantSim, batches: list[torch.Tensor], alpha: float = 0.5) -> dict:
    """Migrate activation outliers of every LayerNorm -> Linear pair into the Linear weights."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothquant alpha must be in [0, 1], not {alpha}")
    pairs = norm_linear_pairs(sim)
    maxima: dict[str, torch.Tensor] = {}

    def track(n):
        def hook(m, i, o):
            m_now = o.detach().abs().reshape(-1, o.shape[-1]).amax(0)
            maxima[n] = torch.maximum(maxima[n], m_now) if n in maxima else m_now
        return hook

    with sim.disabled():  # a running maximum per channel: no activation is kept
        run_hooked(sim, {n: track(n) for n, _ in pairs}, batches, stop_early=True)
    report = {}
    for norm_name, linears in pairs:
        norm = sim.model.get_submodule(norm_name)
        if not norm.elementwise_affine:
            continue
        act_max = maxima[norm_name]
        w_max = torch.stack([sim.weight_layers[n].layer.weight.abs().amax(0) for n in linears]).amax(0)
        s = (act_max.clamp_min(1e-5) ** alpha / w_max.clamp_min(1e-5) ** (1 - alpha)).clamp_min(1e-5)
        norm.weight.div_(s)
        if norm.bias is not None:
            norm.bias.div_(s)
        for n in linears:
            sim.weight_layers[n].layer.weight.mul_(s)
            sim.weight_layers[n].pinned.clear()  # rescaled: an earlier pinned grid no longer fits
        report[norm_name] = {"linears": linears, "act_max_before": [round(float(v), 4) for v in act_max],
                             "act_max_after": [round(float(v), 4) for v in act_max / s]}
    sim.weights_changed()
    return {"alpha": alpha, "pairs": report}
