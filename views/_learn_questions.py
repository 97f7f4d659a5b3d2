"""Learn page: "Questions answered by experiments", each a written answer and a button that runs
the experiment on the chosen model as a background job (drawing only; the numbers come from qcore)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from views._learn_topics import show_verdict
from views._jobs import job_result, run_job
from views._cache import upload_dir
from views._language import t
from qcore.analysis import learn_questions as lq
from qcore.analysis.layers import folded_weight
from qcore.zoo.models import LoadedModel

__all__ = ["questions"]

QAT_STEPS = 150  # question b: a short fine-tune
QAT_FRACTIONS = (0.01, 0.05, 0.1, 0.2)  # question c: a fraction of the training set (5% by default)
QAT_EPOCHS = 3
QAT_BATCH = 64


def _key(q: str, loaded: LoadedModel) -> str:
    return f"learn_q_{q}_{loaded.name}_{loaded.info.get('sha256', '')[:12]}"  # two uploads may share a name


def question_ste(loaded: LoadedModel, sim) -> None:
    st.subheader(t("a. Why simulate quantization in QAT instead of using real integer ops?"))
    st.markdown(t("**Answer:** training needs gradients, and rounding has none: round() is flat between steps, so "
                  "its derivative is zero almost everywhere and integer ops would stop learning. QAT keeps float "
                  "weights, rounds them in the forward pass (fake quantization) and lets the gradient through as if "
                  "rounding were the identity inside the clip range and zero outside it: the straight-through "
                  "estimator (STE)."))
    names = list(sim.weight_layers)
    layer = st.selectbox(t("Weights of layer"), names, index=min(1, len(names) - 1), key="learn_q_ste_layer")
    if st.button(t("Count the gradients"), key="learn_q_ste_start"):
        run_job(_key("ste", loaded), "learn STE", lambda progress: lq.ste_gradients(folded_weight(sim, layer), layer))
    r = job_result(_key("ste", loaded), t("Backpropagates ones through round() and through 4-bit fake quantization "
                                          "of the real weights (clip range: the 99th percentile of |w|)."))
    if r is None:
        return
    st.dataframe(pd.DataFrame([
        {t("through"): "round(w / s) * s", t("gradient 0"): r.weights - r.round_nonzero, t("gradient ≠ 0"): r.round_nonzero},
        {t("through"): t("fake quantization (STE)"), t("gradient 0"): r.ste_zeros, t("gradient ≠ 0"): r.ste_ones + r.ste_other},
    ]), hide_index=True, width="stretch")
    st.caption(t("{layer}: {n} weights, {bits} bits, clip ±{clip:.4g}; {inside} weights inside the range, {outside} "
                 "clipped.").format(layer=r.layer, n=r.weights, bits=r.bits, clip=r.clip, inside=r.in_range,
                                    outside=r.weights - r.in_range))
    show_verdict(lq.ste_verdict(r), {
        "holds": t("round() gives every weight a zero gradient; the STE gives exactly the in-range weights 1 and the "
                   "clipped ones 0."),
        "round_has_gradient": t("round() passed a gradient here."),
        "ste_mask_differs": t("The STE's gradient differs from the in-range mask.")},
        t("Rule: round()'s gradient is zero for every weight, and the STE's is 1 exactly where the rounded code is "
          "inside the integer range, 0 elsewhere."))


def _qat(loaded: LoadedModel, run: dict, bits: int, tag: str, **recipe):
    from qcore.quant.qconfig import QuantConfig
    from qcore.train.qat import QATRecipe, run_qat

    config = QuantConfig(weight_range=run["weight_range"]).with_default(weight_bits=bits, weight_granularity="channel")
    run_job(_key(tag, loaded), f"learn QAT {tag}", run_qat, model=loaded, config=config,
            recipe=QATRecipe(minutes=None, batch_size=QAT_BATCH, int8_each_epoch=False, latency_iters=5, **recipe),
            data=run["data"], calib_size=256, eval_size=run["eval_size"], final_eval_size=run["eval_size"],
            seed=run["seed"], out_dir=upload_dir() / f"learn_qat_{tag}")


def question_when(loaded: LoadedModel, run: dict, bits: int) -> None:
    st.subheader(t("b. When must QAT be used instead of PTQ?"))
    st.markdown(t("**Answer:** when PTQ misses the accuracy budget: usually at 4 bits or fewer, on small or "
                  "depthwise models, or with activations that resist calibration. Try PTQ (with its recovery steps) "
                  "first; QAT costs training time and data."))
    if st.button(t("Run PTQ and a short QAT at W{bits} per-channel").format(bits=bits), key="learn_q_when_start"):
        _qat(loaded, run, bits, "when", steps=QAT_STEPS, epochs=1, train_size=10_000)
    res = job_result(_key("when", loaded), t("{steps} QAT steps of {batch} images (the engine's QAT recipe), then "
                                             "both scored on the evaluation images.").format(steps=QAT_STEPS, batch=QAT_BATCH))
    if res is None:
        return
    r = lq.qat_need(res.report.to_dict())
    c = st.columns(3)
    c[0].metric("FP32", f"{100 * r.fp32_accuracy:.1f}%")
    c[1].metric(t("PTQ W{bits}A8").format(bits=r.weight_bits), f"{100 * r.ptq_accuracy:.1f}%")
    c[2].metric(t("QAT W{bits}A8").format(bits=r.weight_bits), f"{100 * r.qat_accuracy:.1f}%",
                f"{100 * (r.qat_accuracy - r.ptq_accuracy):+.1f}")
    show_verdict(lq.qat_need_verdict(r), {
        "qat_recovers": t("QAT wins back accuracy PTQ loses at this bit width: here QAT is the tool."),
        "ptq_enough": t("PTQ is already within a point of FP32 at W{bits} on this model, so QAT is not needed here; "
                        "try fewer weight bits.").format(bits=r.weight_bits),
        "qat_no_gain": t("PTQ loses accuracy, but this short QAT did not win it back: it needs more steps.")},
        t("Rule: QAT's top-1 is at least {m:.0f} point above PTQ's.").format(m=100 * lq.QAT_MARGIN))
    st.caption(t("{steps} steps in {s:.0f} s on {n} evaluation images.").format(steps=r.steps, s=r.seconds, n=r.eval_images))


@st.cache_data(show_spinner=False)
def _train_size(data: str, decode: tuple[int, str]) -> int:
    from qcore.zoo.data import load_dataset

    return len(load_dataset(data, "train", decode))


def question_data(loaded: LoadedModel, run: dict, bits: int, data_name: str) -> None:
    st.subheader(t("c. Does QAT need the whole training set again?"))
    st.markdown(t("**Answer:** no. QAT fine-tunes an already trained model for a short while at a small learning "
                  "rate: a fraction of the training data, a few epochs, usually recovers most of what PTQ lost. "
                  "Labels are needed (or the FP32 model's own predictions as targets)."))
    from qcore.zoo.inputs import decode_for

    full = _train_size(data_name, decode_for(loaded))
    fraction = st.select_slider(t("Fraction of the training set"), options=QAT_FRACTIONS, value=0.05,
                                format_func="{:.0%}".format, key="learn_q_fraction")
    size = max(QAT_BATCH, int(full * fraction))
    steps = QAT_EPOCHS * max(1, size // QAT_BATCH)
    if st.button(t("Run QAT on {pct:.0%} of the training set for {epochs} short epochs").format(
            pct=fraction, epochs=QAT_EPOCHS), key="learn_q_data_start"):
        _qat(loaded, run, bits, "data", steps=steps, epochs=QAT_EPOCHS, train_size=size)
    res = job_result(_key("data", loaded), t("{size} training images, {steps} steps at W{bits}A8; the fake-quant "
                                             "model is scored after each epoch (one run: the learning rate anneals "
                                             "over all epochs).").format(size=size, steps=steps, bits=bits))
    if res is None:
        return
    r = lq.qat_data(res.report.to_dict(), full)
    st.dataframe(pd.DataFrame([{t("epoch"): e["epoch"], t("step"): e["step"], t("top-1 %"): round(100 * e["accuracy"], 2)}
                               for e in r.epochs]), hide_index=True, width="stretch")
    st.caption(t("Epoch 0 is PTQ. FP32: {fp32:.1f}%. {n} training images ({pct:.0%}), {s:.0f} s.").format(
        fp32=100 * r.fp32_accuracy, n=r.train_images, pct=r.train_fraction, s=r.seconds))
    show_verdict(lq.qat_data_verdict(r), {
        "fraction_enough": t("One epoch on the fraction already wins back most of what PTQ lost."),
        "fraction_not_enough": t("One epoch on the fraction did not win back half of what PTQ lost on this model."),
        "no_gap": t("PTQ loses less than a point here, so there is nothing to win back: try fewer weight bits.")},
        t("Rule: the first epoch wins back at least {share:.0%} of the FP32 - PTQ gap, or ends within {m:.0f} point of "
          "FP32; a gap under {m:.0f} point cannot tell.").format(share=lq.RECOVERED_SHARE, m=100 * lq.QAT_MARGIN))


def questions(loaded: LoadedModel, sim, run: dict, data_name: str) -> None:
    st.header(t("Questions answered by experiments"))
    question_ste(loaded, sim)
    bits = st.select_slider(t("Weight bits for the QAT questions"), options=[2, 3, 4], value=4, key="learn_q_bits")
    question_when(loaded, run, bits)
    question_data(loaded, run, bits, data_name)
