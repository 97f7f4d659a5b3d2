"""Accuracy, agreement with FP32, and output error (SQNR, MSE, cosine) per layer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from qcore.quant.progress import Msg, Progress
from qcore.quant.recovery.reference import fp32_reference
from qcore.zoo.data import ImageSet
from qcore.zoo.inputs import batches


__all__ = ["EvalResult", "logits", "scores", "top1", "evaluate", "agreement", "sqnr_db", "output_errors", "layer_errors",
           "single_threaded"]

@dataclass(frozen=True)
class EvalResult:
    """Top-1/top-5 accuracy (fractions) and each image's top-1 prediction."""

    top1: float
    top5: float
    predictions: torch.Tensor
    n: int

    def agreement_with(self, other: "EvalResult") -> float:
        return agreement(self.predictions, other.predictions)


@torch.no_grad()
def logits(model: Callable[[torch.Tensor], torch.Tensor], xs: Iterable[torch.Tensor],
           progress: Progress | None = None, total: int | None = None) -> torch.Tensor:
    """The model's outputs over model-ready batches, concatenated; progress after each batch
    (as a fraction of `total` images when given)."""
    out, done = [], 0
    for x in xs:
        out.append(model(x))
        done += len(x)
        if progress:
            progress(done / total if total else None, Msg("{done}/{total} images", done=done, total=total or "?"))
    return torch.cat(out)


def scores(out: torch.Tensor, labels: torch.Tensor) -> EvalResult:
    """Top-1/top-5 accuracy of logits against labels: the one scoring rule of the engine."""
    if not torch.isfinite(out).all():
        raise FloatingPointError("the model produced NaN or inf outputs")
    # top-1 is argmax (the first of tied logits, which fake-quantized models do produce); top-5 from topk
    pred = out.argmax(1)
    top = out.topk(min(5, out.shape[1]), dim=1).indices
    n = len(labels)
    return EvalResult(float((pred == labels).sum()) / n, float((top == labels[:, None]).any(1).sum()) / n, pred, n)


def top1(model: Callable[[torch.Tensor], torch.Tensor], xs: Iterable[torch.Tensor], labels: torch.Tensor,
         progress: Progress | None = None) -> float:
    """Top-1 accuracy of `model` over model-ready batches."""
    return scores(logits(model, xs, progress, len(labels)), labels).top1


def evaluate(
    model: nn.Module,
    preprocess: Callable,
    data: ImageSet,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Top-1 and top-5 accuracy of `model` on raw images `data` (preprocessed batch by batch)."""
    if len(data) == 0:
        raise ValueError("the evaluation set is empty")
    return scores(logits(model, batches(data.images, preprocess, batch_size), progress, len(data)), data.labels)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of images on which two models make the same top-1 prediction."""
    return float((a == b).float().mean())


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio: 10 log10(sum ref^2 / sum (ref - test)^2), in dB."""
    return _sqnr(float((reference.double() ** 2).sum()), float(((reference.double() - test.double()) ** 2).sum()))


def _sqnr(signal: float, noise: float) -> float:
    """10 log10(signal / noise) from the two sums, with the limits of an exact or an all-zero reference."""
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def kl_divergence(reference_logits: torch.Tensor, test_logits: torch.Tensor) -> float:
    """Mean KL(softmax(reference) || softmax(test)) per image, in nats: how far the quantized model's
    class distribution moved from the FP32 one (needs no labels)."""
    p = torch.log_softmax(reference_logits.double(), 1)
    q = torch.log_softmax(test_logits.double(), 1)
    return float((p.exp() * (p - q)).sum(1).mean())


def output_errors(reference: torch.Tensor, test: torch.Tensor) -> dict:
    """SQNR (dB), MSE and cosine similarity between two tensors of the same shape."""
    r, t = reference.double().flatten(), test.double().flatten()
    cos = float(torch.nn.functional.cosine_similarity(r, t, dim=0)) if r.norm() > 0 and t.norm() > 0 else float("nan")
    return {"sqnr_db": sqnr_db(r, t), "mse": float(((r - t) ** 2).mean()), "cosine": cos}


CAPTURE_BUDGET_BYTES = 256 * 2**20  # every quantizer's values of the images compared at once (both runs)


def _chunk_errors(sim, x: torch.Tensor, sums: dict[str, torch.Tensor]) -> int:
    """Add one chunk's sums (ref^2, (ref - q)^2, ref.q, q^2, count) per quantizer into `sums`; returns the
    bytes the chunk's captured values took. The reference is the FP32 network, also after AdaRound/GPTQ rounded
    the sim's weights (compared with those in float, a layer's SQNR would leave its weight rounding out)."""
    with fp32_reference(sim), sim.capture() as ref_records:
        sim(x)
    with sim.capture() as q_records:
        sim(x)
    ref = {name: out for name, _, out in ref_records}
    for name, _, out in q_records:
        r, t = ref[name].double().flatten(), out.double().flatten()
        add = torch.stack([(r * r).sum(), ((r - t) ** 2).sum(), (r * t).sum(), (t * t).sum(), torch.tensor(r.numel())])
        sums[name] = sums[name] + add if name in sums else add
    return sum(o.numel() * o.element_size() * 2 for _, _, o in ref_records)


def _errors_from_sums(s: torch.Tensor) -> dict:
    signal, noise, dot, test, n = (float(v) for v in s)
    cos = dot / math.sqrt(signal * test) if signal > 0 and test > 0 else float("nan")
    return {"sqnr_db": _sqnr(signal, noise), "mse": noise / n, "cosine": cos}


@torch.no_grad()
def layer_errors(sim, x: torch.Tensor, budget_bytes: int = CAPTURE_BUDGET_BYTES) -> dict[str, dict]:
    """Each quantizer's output in the quantized model against the same point in float.

    Errors accumulate along the network, as they do in the deployed model: this is the
    end-to-end error at each layer's output, the number per-layer SQNR charts show. The images go through in
    chunks that keep every layer's captured values (both runs) within `budget_bytes`, measured on the first
    image: an ImageNet model keeps tens of megabytes per image, so 32 images at once would be gigabytes.
    """
    sums: dict[str, torch.Tensor] = {}
    per_image = _chunk_errors(sim, x[:1], sums)
    step = max(1, budget_bytes // max(1, per_image))
    for i in range(1, len(x), step):
        _chunk_errors(sim, x[i: i + step], sums)
    return {name: _errors_from_sums(s) for name, s in sums.items()}


def single_threaded(fn, *args):
    """`fn(*args)` on one thread: torch's parallel sums depend on the thread count in the last bits, and a
    sweep's numbers must not depend on which executor (one thread per Ray worker) computed them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)
