"""Block-wise reconstruction (BRECQ, Li et al. 2021, with QDrop's mixed inputs, Wei et al. 2022).

AdaRound fits each layer's rounding to that layer's FP32 output. A block (a residual block, or a few layers of a
chain: `blocks.split_blocks`) fits the rounding of all its layers at once to the block's FP32 output, through its
activation quantizers (straight-through), so the layers make up for each other's error and for the activation
grid's, which layer by layer nobody sees. QDrop (`drop` > 0): each value of the block's input is taken from the
FP32 network with probability `drop`, else from the quantized one, so the rounding does not fit one input only.
The default is 0, plain BRECQ: the block then also makes up for the error the blocks before it left (fm_resnet
W4A8 per-tensor after CLE, full test set, 500 iterations: drop 0 93.18%, drop 0.5 92.90%).

Activation step sizes (`act_lr` > 0, off by default): the step size of each activation quantizer inside the block
is learned with the rounding (LSQ, Esser et al. 2020, as BRECQ's and QDrop's own code do), then kept only if the
block's output error on its calibration images is lower with the learned steps than with the calibrated ones. Kept
steps go into `sim.learned_ranges`, which calibration keeps. Off by default because at the default 500 iterations
it did not measure better (W4A8 per-tensor after CLE, full test set, act_lr 2e-5 against 0, top-1 / agreement with
FP32): fm_resnet 93.27 / 98.14 against 93.13 / 98.07, fm_mobilenetv2 92.38 / 98.62 against 92.50 / 98.48. At 2000
iterations fm_resnet gave 93.31 / 99.18 against 93.14 / 99.27, and 93.13 to 93.31 over five seeds (README: runs of one
setting spread as widely as the settings differ). 4e-5 overshot (the blocks' errors rose).

Same soft rounding and regularizer schedule as AdaRound (`rounding.py`); the weights end on the layer's grid,
pinned, so re-quantizing and exporting keep them. Blocks go in order, each fed by the blocks before it as they
were rounded. Block inputs and targets are held for as many calibration images as fit in CAPTURE_BUDGET_BYTES.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from qcore.quant.progress import Msg, Progress, silent
from qcore.quant.quantsim import ActQuantizer, QuantSim, image_count
from qcore.quant.recovery.blocks import Block, split_blocks
from qcore.quant.recovery.reference import fp32_reference, remember
from qcore.quant.recovery.rounding import (CAPTURE_BUDGET_BYTES, PROBE, SoftRounding, _first_images, annealed_beta,
                                           output_error, rounded_layers)

__all__ = ["reconstruct_blocks", "ACT_LR"]

ACT_LR = 2e-5  # Adam's learning rate for the activation step sizes where they are learned (the page's toggle)


@contextmanager
def _soft_weights(roundings: list[SoftRounding]):
    """Inside, each layer runs its soft-rounded weight (the instance attribute shadows the method)."""
    try:
        for r in roundings:
            r.wl.quantized_weight = r.weight
        yield
    finally:
        for r in roundings:
            del r.wl.quantized_weight
            r.wl.forget_quantized()


def _through(sim: QuantSim, blocks: list[Block], batches, fp32: bool) -> torch.Tensor:
    """`batches` run through `blocks` (as the quantized sim runs them, or as its FP32 reference), concatenated."""
    out = []
    with torch.no_grad(), (fp32_reference(sim) if fp32 else nullcontext()):
        for x in batches:
            for b in blocks:
                x = b.module(x)
            out.append(x)
    return torch.cat(out)


def _images_that_fit(sim: QuantSim, blocks: list[Block], k: int, batches) -> int:
    """How many calibration images block k can be fitted on: its quantized and FP32 inputs and its FP32 output per
    image, measured on one image, within CAPTURE_BUDGET_BYTES."""
    one = _first_images(batches, 1)
    x = _through(sim, blocks[:k], one, fp32=True)
    y = _through(sim, blocks[k: k + 1], [x], fp32=True)
    per_image = (2 * x.numel() * x.element_size() + y.numel() * y.element_size()) // max(1, len(x))
    return max(1, min(image_count(batches), CAPTURE_BUDGET_BYTES // max(1, per_image)))


def _step_images(block: Block, x: torch.Tensor, y: torch.Tensor, most: int) -> int:
    """Images per optimisation step: at most `most`, fewer where the block's autograd graph would pass
    CAPTURE_BUDGET_BYTES (estimated as one value of the larger of its input and output per graph node and image;
    ResNet50's first block at 32 images per step peaked the process at 3.7 GB)."""
    per_image = len(block.module.graph.nodes) * max(x[0].numel(), y[0].numel()) * x.element_size()
    return max(1, min(most, CAPTURE_BUDGET_BYTES // max(1, per_image)))


def _block_quantizers(block: Block) -> list[ActQuantizer]:
    """The integer activation quantizers a block runs (the one on its input belongs to the block before)."""
    return [m for m in block.module.modules() if isinstance(m, ActQuantizer) and m.quantizes_int]


def _fit_block(block: Block, roundings: list[SoftRounding], quantizers: list[ActQuantizer], x_q: torch.Tensor,
               x_fp: torch.Tensor, target: torch.Tensor, settings: dict, gen: torch.Generator) -> None:
    iters, reg, drop = settings["iters"], settings["reg"], settings["drop"]
    batch = _step_images(block, x_q, target, settings["batch"])
    groups = [{"params": [r.v for r in roundings], "lr": settings["lr"]}]
    if quantizers:
        groups.append({"params": [q.learn_range() for q in quantizers], "lr": settings["act_lr"]})
    opt = torch.optim.Adam(groups)
    with torch.enable_grad(), _soft_weights(roundings):
        for it in range(iters):
            idx = torch.randint(0, len(x_q), (min(batch, len(x_q)),), generator=gen)
            mix = torch.rand(x_q[idx].shape, generator=gen) < drop
            loss = output_error(block.module(torch.where(mix, x_fp[idx], x_q[idx])), target[idx])
            if (beta := annealed_beta(it, iters)) is not None:
                loss = loss + reg * sum(r.regularizer(beta) for r in roundings)
            opt.zero_grad()
            loss.backward()
            opt.step()


def _block_error(block: Block, x: torch.Tensor, target: torch.Tensor, chunk: int = 32) -> float:
    """The block's output MSE against `target` over all of `x`, a few images at a time (a 224x224 block's inner
    activations for every captured image at once would be several times the capture budget)."""
    with torch.no_grad():
        total = sum(F.mse_loss(block.module(x[i: i + chunk]), target[i: i + chunk], reduction="sum").item()
                    for i in range(0, len(x), chunk))
    return total / max(1, target.numel())


def _settle_steps(sim: QuantSim, block: Block, quantizers: list[ActQuantizer], x: torch.Tensor,
                  target: torch.Tensor) -> dict:
    """Fix the learned step sizes, and keep them only where the block's output error on the images it was fitted
    on (`x`: all of them, the choice is noisy on a few) is lower than with the calibrated ones (a step size that
    overshot is dropped, not kept); kept ones go into sim.learned_ranges. Returns {quantizer: [calibrated step,
    learned step]} and whether they were kept."""
    calibrated = [(q, q.range, q.scheme) for q in quantizers]
    for q in quantizers:
        q.freeze_range("brecq")
    learned = [(q, q.range) for q in quantizers]
    learned_mse = _block_error(block, x, target)
    for q, result, scheme in calibrated:
        q.set_range(result, scheme, "int")
    keep = learned_mse < _block_error(block, x, target)
    for q, result in learned if keep else []:
        q.set_range(result, q.scheme, "int", exact=True)
        sim.learned_ranges[q.name] = (result, q.scheme)
    return {"activation_steps": {q.name: [c.scale, r.scale] for (q, c, _), (_, r) in zip(calibrated, learned)},
            "activation_steps_kept": keep}


def _one_block(sim: QuantSim, blocks: list[Block], k: int, batches, settings: dict, gen: torch.Generator,
               names: list[str]) -> dict:
    block = blocks[k]
    used = _first_images(batches, _images_that_fit(sim, blocks, k, batches))
    x_q, x_fp = _through(sim, blocks[:k], used, fp32=False), _through(sim, blocks[:k], used, fp32=True)
    target = _through(sim, [block], [x_fp], fp32=True)
    probe = slice(0, PROBE)
    with torch.no_grad():
        mse_nearest = F.mse_loss(block.module(x_q[probe]), target[probe]).item()
    for name in names:
        remember(sim, name)
    roundings = [SoftRounding(sim.weight_layers[n]) for n in names]
    quantizers = _block_quantizers(block) if settings["act_lr"] > 0 else []
    _fit_block(block, roundings, quantizers, x_q, x_fp, target, settings, gen)
    flipped = sum(r.store() for r in roundings)
    sim.weights_changed()
    steps = _settle_steps(sim, block, quantizers, x_q, target) if quantizers else {}
    with torch.no_grad():
        mse = F.mse_loss(block.module(x_q[probe]), target[probe]).item()
    return {"layers": names, "flipped": flipped, "weights": sum(r.v.numel() for r in roundings),
            "mse_nearest": mse_nearest, "mse": mse, "images": len(x_q),
            "images_per_step": _step_images(block, x_q, target, settings["batch"]), **steps}


def reconstruct_blocks(sim: QuantSim, batches, iters: int = 500, reg: float = 0.01, drop: float = 0.0,
                       lr: float = 0.01, batch: int = 32, seed: int = 0, act_lr: float = 0.0,
                       progress: Progress | None = None) -> dict:
    """Block-wise reconstruction of every block with integer-weight layers, in graph order; returns per-block
    layers, flips, output MSEs (round-to-nearest against reconstructed, on the first PROBE images), the
    activation step sizes (calibrated and learned, and whether they were kept) and seconds."""
    say, gen, out = progress or silent, torch.Generator().manual_seed(seed), {}
    blocks = split_blocks(sim)
    rounded = set(rounded_layers(sim))
    for k, block in enumerate(blocks):
        say(k / len(blocks), Msg("{method} {layer} ({i}/{n})", method="BRECQ", layer=block.layers[0] if block.layers
                                 else "", i=k + 1, n=len(blocks)))
        if not set(block.layers) & rounded:
            continue
        start = time.perf_counter()
        names = [n for n in block.layers if n in rounded]
        settings = {"iters": iters, "reg": reg, "drop": drop, "lr": lr, "batch": batch, "act_lr": act_lr}
        out[f"block {k + 1}"] = {**_one_block(sim, blocks, k, batches, settings, gen, names),
                                 "seconds": round(time.perf_counter() - start, 3)}
    return {"blocks": out}
