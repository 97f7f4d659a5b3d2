"""The measured halves of the topics, as one background job each (`measure_topic`), each with its own
result type: the page reads fields, not keys whose presence depends on the topic."""

from __future__ import annotations

from dataclasses import dataclass

from qcore.analysis.learn_topics.lowbit import lowbit_accuracy
from qcore.analysis.learn_topics.smoothquant import SmoothQuantReport, smoothquant_topic
from qcore.analysis.learn_topics.spread import spread_accuracy
from qcore.quant.progress import Msg, Progress, silent

__all__ = ["TOPIC_RUNS", "LowbitRun", "SpreadRun", "SmoothQuantRun", "measure_topic"]


TOPIC_RUNS = ("lowbit", "smoothquant", "spread")


@dataclass(frozen=True)
class LowbitRun:
    """Top-1 with every weight in each 4-bit format (and "FP32", the folded model unquantized)."""

    accuracy: dict[str, float]
    eval_images: int
    scored_by: str  # "labels", or "fp32": top-1 agreement with the FP32 model


@dataclass(frozen=True)
class SpreadRun:
    """Top-1 of W8A8 PTQ with per-tensor and with per-channel weight scales (and "FP32")."""

    accuracy: dict[str, float]
    eval_images: int
    scored_by: str


@dataclass(frozen=True)
class SmoothQuantRun:
    """FP32, plain PTQ and PTQ after SmoothQuant, with the channel maxima before and after the migration."""

    report: SmoothQuantReport
    eval_images: int
    scored_by: str


def measure_topic(topic: str, model, data: str | None = None, calib_size: int = 256, eval_size: int = 1000,
                  seed: int = 0, progress: Progress | None = None) -> LowbitRun | SpreadRun | SmoothQuantRun:
    """The accuracy half of topic `topic` (one of TOPIC_RUNS) on `eval_size` test images: 4-bit formats,
    SmoothQuant or per-tensor vs per-channel."""
    from qcore.zoo.inputs import prepare_inputs

    if topic not in TOPIC_RUNS:
        raise ValueError(f"unknown topic {topic!r}; choose from {', '.join(TOPIC_RUNS)}")
    say = progress or silent
    say(0.0, Msg("loading images"))
    inp = prepare_inputs(model, data, calib_size, eval_size, seed)
    m, xs, labels = inp.loaded.module, inp.eval_batches, inp.labels
    seen = {"eval_images": inp.eval_size, "scored_by": inp.scored_by}
    if topic == "lowbit":
        out = LowbitRun(lowbit_accuracy(m, xs, labels, progress=say), **seen)
    elif topic == "spread":
        out = SpreadRun(spread_accuracy(m, inp.calib_batches, xs, labels, progress=say), **seen)
    else:
        out = SmoothQuantRun(smoothquant_topic(m, inp.calib_batches, xs, labels, name=inp.loaded.name,
                                               progress=say), **seen)
    say(1.0, Msg("done"))
    return out
