"""Accuracy, agreement with FP32, and output error (SQNR, MSE, cosine) per layer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from qcore.zoo.data import ImageSet

__all__ = ["EvalResult", "batches", "evaluate", "agreement", "sqnr_db", "output_errors", "layer_errors"]

DEFAULT_BATCH = 250


@dataclass(frozen=True)
class EvalResult:
    """Top-1/top-5 accuracy (fractions) and each image's top-1 prediction."""

    top1: float
    top5: float
    predictions: torch.Tensor
    n: int

    def agreement_with(self, other: "EvalResult") -> float:
        return agreement(self.predictions, other.predictions)


def batches(images: torch.Tensor, preprocess: Callable, batch_size: int = DEFAULT_BATCH) -> Iterator[torch.Tensor]:
    """Model-ready float batches from raw uint8 images, preprocessed one batch at a time."""
    for i in range(0, len(images), batch_size):
        yield preprocess(images[i: i + batch_size])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    preprocess: Callable,
    data: ImageSet,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[float], None] | None = None,
) -> EvalResult:
    """Top-1 and top-5 accuracy of `model` on `data`."""
    if len(data) == 0:
        raise ValueError("the evaluation set is empty")
    preds, top1, top5 = [], 0, 0
    done = 0
    for x, start in zip(batches(data.images, preprocess, batch_size), range(0, len(data), batch_size)):
        y = data.labels[start: start + len(x)]
        logits = model(x)
        if not torch.isfinite(logits).all():
            raise FloatingPointError("the model produced NaN or inf outputs")
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        preds.append(top[:, 0])
        top1 += int((top[:, 0] == y).sum())
        top5 += int((top == y[:, None]).any(1).sum())
        done += len(x)
        if progress:
            progress(done / len(data))
    n = len(data)
    return EvalResult(top1 / n, top5 / n, torch.cat(preds), n)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of images on which two models make the same top-1 prediction."""
    return float((a == b).float().mean())


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio: 10 log10(sum ref^2 / sum (ref - test)^2), in dB."""
    noise = float(((reference.double() - test.double()) ** 2).sum())
    signal = float((reference.double() ** 2).sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def output_errors(reference: torch.Tensor, test: torch.Tensor) -> dict:
    """SQNR (dB), MSE and cosine similarity between two tensors of the same shape."""
    r, t = reference.double().flatten(), test.double().flatten()
    cos = float(torch.nn.functional.cosine_similarity(r, t, dim=0)) if r.norm() > 0 and t.norm() > 0 else float("nan")
    return {"sqnr_db": sqnr_db(r, t), "mse": float(((r - t) ** 2).mean()), "cosine": cos}


@torch.no_grad()
def layer_errors(sim, x: torch.Tensor) -> dict[str, dict]:
    """Each quantizer's output in the quantized model against the same point in float.

    Errors accumulate along the network, as they do in the deployed model: this is the
    end-to-end error at each layer's output, the number per-layer SQNR charts show.
    """
    with sim.disabled(), sim.capture() as ref_records:
        sim(x)
    with sim.capture() as q_records:
        sim(x)
    ref = {name: out for name, _, out in ref_records}
    return {name: output_errors(ref[name], out) for name, _, out in q_records}
