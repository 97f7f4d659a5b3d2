"""The measured halves of the topics, as one background job each (`measure_topic`)."""

from __future__ import annotations

from qcore.quant.progress import Msg, Progress, silent
from qcore.analysis.learn_topics.lowbit import lowbit_accuracy
from qcore.analysis.learn_topics.smoothquant import smoothquant_topic
from qcore.analysis.learn_topics.spread import spread_accuracy

__all__ = ["TOPIC_RUNS", "measure_topic"]


TOPIC_RUNS = ("lowbit", "smoothquant", "spread")


def measure_topic(topic: str, model, data: str | None = None, calib_size: int = 256, eval_size: int = 1000,
                  seed: int = 0, progress: Progress | None = None) -> dict:
    """The accuracy half of topic `topic` (one of TOPIC_RUNS) on `eval_size` test images: 4-bit formats,
    SmoothQuant or per-tensor vs per-channel. Returns {"accuracy": ..., "eval_images": n} ("report": the
    SmoothQuantReport for "smoothquant")."""
    from qcore.zoo.inputs import prepare_inputs

    if topic not in TOPIC_RUNS:
        raise ValueError(f"unknown topic {topic!r}; choose from {', '.join(TOPIC_RUNS)}")
    say = progress or silent
    say(0.0, Msg("loading images"))
    inp = prepare_inputs(model, data, calib_size, eval_size, seed)
    m, xs, labels = inp.loaded.module, inp.eval_batches, inp.labels
    if topic == "lowbit":
        out = {"accuracy": lowbit_accuracy(m, xs, labels, progress=say)}
    elif topic == "spread":
        out = {"accuracy": spread_accuracy(m, inp.calib_batches, xs, labels, progress=say)}
    else:
        out = {"report": smoothquant_topic(m, inp.calib_batches, xs, labels, name=inp.loaded.name, progress=say)}
    say(1.0, Msg("done"))
    return {**out, "eval_images": inp.eval_size, "scored_by": inp.scored_by}
