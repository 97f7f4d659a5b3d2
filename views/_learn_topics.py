"""Learn page, topics 7-11: claims from the literature checked on the chosen model (drawing only).

Cheap numbers are cached per model (keyed like layer_stats); accuracy and latency runs start as
background jobs from a button. Every sentence is a t("...") msgid; qcore returns numbers and
reason codes, and the words for each code live here.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from views._jobs import job_result, run_job
from views._learn_anchor import anchor
from views._cache import layer_stats, model_identity
from views._language import t
from qcore.analysis import learn_topics as lt
from qcore.figures import channel_max_figure, lowbit_levels_figure, spread_figure
from qcore.zoo.models import LoadedModel

__all__ = ["show_verdict", "topics"]

MOBILENET = "fm_mobilenetv2"


def show_verdict(v: lt.Verdict, words: dict[str, str], rule: str) -> None:
    """The claim's mark (✓ holds, ✗ does not, – does not apply) with the words for its reason and the rule."""
    text = f"{v.mark} {words.get(v.reason, v.reason)}"
    (st.success if v.holds else st.warning if v.holds is False else st.info)(text)
    st.caption(rule)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _job_key(topic: str, loaded: LoadedModel) -> str:
    return f"learn_job_{topic}_{loaded.name}_{loaded.info.get('sha256', '')[:12]}"  # two uploads may share a name


def _start_button(label: str, tag: str, loaded: LoadedModel, fn, /, **kwargs) -> None:
    if st.button(label, key=f"start_{_job_key(tag, loaded)}"):
        # the dynamic-vs-static topic times batch-1 latency: it runs alone on the cores
        run_job(_job_key(tag, loaded), f"learn {tag}", fn, exclusive=tag == "dynamic", **kwargs)


@st.cache_resource(show_spinner=False, max_entries=8, hash_funcs={LoadedModel: model_identity})
def _linear_facts(loaded: LoadedModel) -> dict:
    """Which layers dynamic INT8 would replace, and the Linear layers' share of the MACs."""
    from qcore.runtime.backends.x86 import quantize_linear_dynamic

    _, changed = quantize_linear_dynamic(loaded.module)
    convs = sum(type(m).__name__ == "Conv2d" for m in loaded.module.modules())
    return {"changed": changed, "convs": convs, "share": lt.linear_mac_share(loaded.module, loaded.spec.input_shape)}


def topic_dynamic(loaded: LoadedModel, run: dict) -> None:
    from qcore.runtime.dynamic_study import dynamic_vs_static

    st.header(t("7. Dynamic vs static PTQ"))
    st.markdown(t("**Claim:** dynamic quantization (int8 weights, activations quantized at run time from each "
                  "batch's own range) suits Linear-heavy models; static quantization (calibrated activation ranges) "
                  "wins on convolutions."))
    f = _linear_facts(loaded)
    st.write(t("`quantize_dynamic` replaces {n} layer(s) of {model}: {names}. Linear layers do {share:.2%} of its "
               "multiply-accumulates; its {convs} convolution(s) stay FP32 (torch has no dynamic convolution kernel).")
             .format(n=len(f["changed"]), model=loaded.name, names=", ".join(f["changed"][:12]) or "–",
                     share=f["share"], convs=f["convs"]))
    if f["share"] < lt.LINEAR_HEAVY_SHARE:
        st.caption(t("This is a convolutional net: dynamic INT8 leaves almost all of its work in FP32."))
    _start_button(t("Measure FP32, dynamic INT8 and static INT8"), "dynamic", loaded, dynamic_vs_static,
                  model=loaded, data=run["data"], eval_size=run["eval_size"], seed=run["seed"])
    r = job_result(_job_key("dynamic", loaded), t("Accuracy on the evaluation images and batch-1 latency, "
                                                   "interleaved in one process with the same threads (median)."))
    if r is None:
        return
    names = {"fp32": "FP32", "dynamic_int8": t("dynamic INT8"), "static_int8": t("static INT8")}
    st.dataframe(pd.DataFrame([{t("path"): names[n], t("top-1 %"): round(100 * r.accuracy[n], 2),
                                t("median latency (ms)"): r.latency_ms[n],
                                t("speedup vs FP32"): round(r.latency_ms["fp32"] / r.latency_ms[n], 2)} for n in names]),
                 hide_index=True, width="stretch")
    st.caption(t("{images} images, batch {batch}, {threads} threads; static INT8 ran on {backend}.").format(
        images=r.eval_images, batch=r.batch, threads=r.threads, backend=r.static_backend))
    words = {"linear_dynamic_faster": t("Linear-heavy, and dynamic INT8 is faster than FP32 here."),
             "linear_dynamic_not_faster": t("Linear-heavy, yet dynamic INT8 is not faster than FP32 on this model: its "
                                            "Linear layers are too small for the run-time quantization to pay off."),
             "conv_static_faster": t("Convolutional, and static INT8 is faster than dynamic INT8 here."),
             "conv_static_not_faster": t("Convolutional, yet static INT8 is not faster than dynamic INT8 on this model "
                                         "and CPU.")}
    show_verdict(lt.dynamic_verdict(r), words, t(
        "Rule: Linear layers doing at least {heavy:.0%} of the MACs make a model Linear-heavy; there dynamic must "
        "be {margin:.0%} faster than FP32, elsewhere static must be {margin:.0%} faster than dynamic.").format(
        heavy=lt.LINEAR_HEAVY_SHARE, margin=lt.LATENCY_MARGIN))


@st.cache_resource(show_spinner=False, max_entries=8, hash_funcs={LoadedModel: model_identity})
def _lowbit(loaded: LoadedModel, data: str | None, seed: int) -> lt.LowBitReport:
    sim, _ = layer_stats(loaded, data, seed)
    return lt.lowbit_errors(sim, name=loaded.name)


def topic_lowbit(loaded: LoadedModel, run: dict) -> None:
    from qcore.quant.lowbit import LOWBIT_FORMATS

    st.header(t("8. Four-bit formats: INT4, NF4, FP4"), anchor=anchor("lowbit"))
    st.markdown(t("**Claim (QLoRA):** NF4's 16 levels are quantiles of a normal distribution, so on bell-shaped "
                  "weights it beats INT4 and FP4 at the same block size; and small blocks beat one scale per channel."))
    st.plotly_chart(lowbit_levels_figure({k.upper(): v for k, v in LOWBIT_FORMATS.items()},
                                         x_title=t("level (block scaled to [-1, 1])")), key="lowbit_levels")
    r = _lowbit(loaded, run["data"], run["seed"])
    cols = {"format": t("format"), "sqnr_db": t("SQNR, all weights (dB)"),
            "median_layer_sqnr_db": t("median layer SQNR (dB)"), "worst_layer": t("worst layer"),
            "worst_layer_sqnr_db": t("its SQNR (dB)")}
    st.dataframe(pd.DataFrame(r.rows).rename(columns=cols), hide_index=True, width="stretch")
    st.caption(t("{weights} weights of {layers} layers (BN folded). Blocks of {block} consecutive weights, each "
                 "scaled by its absolute maximum; the NF4 and FP4 rounding is qcore's own (qcore/quant/lowbit.py): no "
                 "library here rounds arbitrary CPU conv weights to these level sets.").format(
        weights=r.weights, layers=r.layers, block=r.block_size))
    words = {"nf4_best": t("NF4 has the lowest error, and per-group scales beat per-channel ones, on this model."),
             "nf4_not_best": t("NF4 is not the most accurate block format on this model's weights: they are not "
                               "bell-shaped enough for normal quantiles to pay off."),
             "groups_no_help": t("NF4 is best among the block formats, but blocks of {block} weights are worse than one "
                                 "scale per output channel here: a block spans channels of very different ranges.")
             .format(block=r.block_size)}
    show_verdict(lt.lowbit_verdict(r), words, t(
        "Rule: NF4's SQNR over all weights is the highest of INT4 per-group, NF4 and FP4, and INT4 per-group's is "
        "above INT4 per-channel's."))
    _start_button(t("Measure accuracy with all weights in each format"), "lowbit", loaded, lt.measure_topic,
                  topic="lowbit", model=loaded, data=run["data"], eval_size=run["eval_size"], seed=run["seed"])
    res = job_result(_job_key("lowbit", loaded), t("Top-1 with every weight in the format, activations in FP32."))
    if res is not None:
        st.dataframe(pd.DataFrame([{t("format"): k, t("top-1 %"): round(100 * v, 2)} for k, v in res.accuracy.items()]),
                     hide_index=True, width="stretch")
        st.caption(t("{n} evaluation images.").format(n=res.eval_images))


def topic_smoothquant(loaded: LoadedModel, sim, run: dict) -> None:
    from qcore.quant.recovery.graph import norm_linear_pairs

    st.header(t("9. SmoothQuant: moving activation outliers into the weights"))
    st.markdown(t("**Claim:** a few input channels of a transformer's Linear layers carry much larger values than the "
                  "rest; dividing them by s = max|X|^α / max|W|^(1-α) (α = {alpha}) and multiplying the weights by s "
                  "flattens the activation and improves 8-bit activation (A8) accuracy.").format(alpha=lt.SMOOTH_ALPHA))
    pairs = norm_linear_pairs(sim)
    if not pairs:
        show_verdict(lt.Verdict(None, "no_norm_linear"), {"no_norm_linear": t(
            "Does not apply to {model}: it has no LayerNorm -> Linear pair, the place SmoothQuant folds its scales into "
            "(a BN-ReLU conv net keeps its ranges per channel in the weights already). Try fm_vit.").format(
            model=loaded.name)}, t("Rule: the model must have a LayerNorm whose output feeds Linear layers."))
        return
    st.write(t("{n} LayerNorm -> Linear pairs.").format(n=len(pairs)))
    _start_button(t("Run SmoothQuant and measure A8 accuracy"), "smoothquant", loaded, lt.measure_topic,
                  topic="smoothquant", model=loaded, data=run["data"], eval_size=run["eval_size"], seed=run["seed"])
    res = job_result(_job_key("smoothquant", loaded), t("Per-channel maxima before and after the migration, and "
                                                         "W8A8 accuracy with and without it."))
    if res is None:
        return
    r = res.report
    worst = max(r.pairs, key=lambda p: p["outlier_before"])
    st.plotly_chart(channel_max_figure(worst["before"], worst["after"], t("Input of {linears} (after {norm})").format(
        linears=", ".join(worst["linears"]), norm=worst["norm"]), x_title=t("input channel"),
        y_title=t("max |activation|"), names=(t("before"), t("after"))), key="smooth_channels")
    st.dataframe(pd.DataFrame([{t("LayerNorm"): p["norm"], t("outliers before (max / median)"): p["outlier_before"],
                                t("outliers after (max / median)"): p["outlier_after"]} for p in r.pairs]),
                 hide_index=True, width="stretch")
    c = st.columns(3)
    c[0].metric("FP32", _pct(r.fp32_accuracy))
    c[1].metric(t("W8A8 PTQ"), _pct(r.accuracy_before))
    c[2].metric(t("W8A8 + SmoothQuant"), _pct(r.accuracy_after))
    words = {"holds": t("The outliers shrink and A8 accuracy rises."),
             "outliers_not_reduced": t("The migration did not flatten this model's activations."),
             "accuracy_not_improved": t("The outliers shrink, but A8 accuracy did not rise on this model."),
             "no_gap": t("The outliers shrink, but plain A8 PTQ already matches FP32 on this model: its outliers "
                         "are mild, so there is nothing for SmoothQuant to win back.")}
    show_verdict(lt.smoothquant_verdict(r), words, t(
        "Rule: the median pair's outlier ratio falls, plain A8 loses at least {gap:.1f} points against FP32, and "
        "SmoothQuant's A8 accuracy is above plain A8's.").format(gap=100 * lt.SMOOTH_GAP))


@st.cache_resource(show_spinner=False, max_entries=8, hash_funcs={LoadedModel: model_identity})
def _fp16(loaded: LoadedModel, data: str | None, seed: int) -> lt.Fp16Report:
    from qcore.zoo.data import calibration_subset
    from qcore.zoo.inputs import decode_for, default_data

    _, stats = layer_stats(loaded, data, seed)
    images = calibration_subset(data or default_data(loaded), 16, seed, decode_for(loaded)).images
    return lt.fp16_overflow(loaded.module, stats, loaded.spec.preprocess(images), name=loaded.name)


def topic_fp16(loaded: LoadedModel, run: dict) -> None:
    st.header(t("10. FP16 overflow vs BF16"))
    st.markdown(t("**Claim:** FP16 tops out at {fp16:g}, so large activations overflow to inf; BF16 has FP32's "
                  "exponent range (about {bf16:.2g}) and never does, at the price of fewer mantissa bits.").format(
        fp16=lt.FP16_MAX, bf16=lt.BF16_MAX))
    r = _fp16(loaded, run["data"], run["seed"])
    c = st.columns(3)
    c[0].metric(t("largest |activation|"), f"{r.max_abs_activation:.4g}", help=r.max_layer)
    c[1].metric(t("FP16 headroom"), f"{r.headroom:.4g}x")
    c[2].metric(t("input scale that overflows FP16"), "–" if r.overflow_scale is None else f"{r.overflow_scale:g}x")
    st.dataframe(pd.DataFrame([{t("input scale"): row["scale"], t("FP16 finite"): row["fp16_finite"],
                                t("BF16 finite"): row["bf16_finite"], t("first inf"): row["first_inf_layer"] or "–"}
                               for row in r.sweep]), hide_index=True, width="stretch")
    st.caption(t("The largest activation at scale 1 is at {layer}. The input is multiplied by powers of two, every "
                 "weight and activation cast to the format; the first scale with an inf in FP16 is rerun in BF16. "
                 "Error of the cast alone on real activations (median over layers): FP16 {fp16} dB, BF16 {bf16} dB.")
               .format(layer=r.max_layer, fp16=r.sqnr_db["FP16"], bf16=r.sqnr_db["BF16"]))
    words = {"holds": t("FP16 overflows at {scale:g}x the real input while BF16 stays finite; at the real input FP16 "
                        "has {headroom:.3g}x headroom on this model, and {diff:.0f} dB less error than BF16.").format(
                 scale=r.overflow_scale or 0, headroom=r.headroom, diff=r.sqnr_db["FP16"] - r.sqnr_db["BF16"]),
             "no_overflow_in_sweep": t("No FP16 overflow within the sweep: this model's normalization keeps its "
                                       "activations small however large the input."),
             "bf16_overflowed": t("BF16 overflowed too at that scale.")}
    show_verdict(lt.fp16_verdict(r), words, t("Rule: some input scale makes an FP16 activation inf while BF16 stays "
                                               "finite at the same scale."))


@st.cache_resource(show_spinner=False, max_entries=8, hash_funcs={LoadedModel: model_identity})
def _spread(loaded: LoadedModel, data: str | None, seed: int) -> lt.SpreadReport:
    sim, _ = layer_stats(loaded, data, seed)
    return lt.channel_spreads(sim, name=loaded.name)


def topic_mobilenet(loaded: LoadedModel, run: dict) -> None:
    st.header(t("11. Why MobileNet suffers under per-tensor weights"), anchor=anchor("mobilenet"))
    st.markdown(t("**Claim:** the output channels of depthwise convolutions (BN folded) differ wildly in range, so "
                  "one scale per tensor crushes the narrow channels: MobileNet collapses under per-tensor weight "
                  "quantization while per-channel holds (Krishnamoorthi 2018)."))
    r = _spread(loaded, run["data"], run["seed"])
    st.plotly_chart(spread_figure(r.rows, y_title=t("max / min of per-channel |w| max"),
                                  names=(t("depthwise"), t("other"))), key="spread")
    c = st.columns(2)
    c[0].metric(t("median spread, depthwise"), "–" if r.median_depthwise is None else f"{r.median_depthwise:.3g}")
    c[1].metric(t("median spread, other layers"), "–" if r.median_other is None else f"{r.median_other:.3g}")
    if r.median_depthwise is None:
        show_verdict(lt.spread_verdict(r), {"no_depthwise": t(
            "{model} has no depthwise convolution: above is its own spread, but the comparison needs {mobile}.").format(
            model=loaded.name, mobile=MOBILENET)}, t("Rule: the model must have depthwise convolutions."))
        if loaded.name != MOBILENET and st.button(t("Switch to {mobile}").format(mobile=MOBILENET), key="learn_to_mobile"):
            st.session_state["pending_model"] = MOBILENET
            st.rerun()
        return
    _start_button(t("Measure W8A8 per-tensor vs per-channel"), "spread", loaded, lt.measure_topic,
                  topic="spread", model=loaded, data=run["data"], eval_size=run["eval_size"], seed=run["seed"])
    res = job_result(_job_key("spread", loaded), t("W8A8 PTQ accuracy with one weight scale per tensor and per channel."))
    if res is not None:
        r = replace(r, accuracy={k: v for k, v in res.accuracy.items() if k != "FP32"})  # the cached one stays
        c = st.columns(3)
        for col, k in zip(c, ("FP32", "per-tensor", "per-channel")):
            col.metric({"FP32": "FP32", "per-tensor": t("per-tensor"), "per-channel": t("per-channel")}[k],
                       _pct(res.accuracy[k]))
    words = {"holds": t("Depthwise channels spread wider, and per-channel weights beat per-tensor ones."),
             "depthwise_wider": t("Depthwise channels spread wider than the other layers' (measure the accuracy to "
                                  "finish the check)."),
             "depthwise_not_wider": t("On this model the depthwise channels do not spread wider than the other layers'."),
             "per_tensor_holds": t("The depthwise channels spread wider, yet per-tensor W8A8 holds here: with 8 bits "
                                   "even the narrow channels keep enough levels. The collapse needs wider spreads or "
                                   "fewer bits.")}
    show_verdict(lt.spread_verdict(r), words, t(
        "Rule: the depthwise median spread is above the other layers', and per-channel beats per-tensor by at "
        "least {margin:.0f} point.").format(margin=100 * lt.ACCURACY_MARGIN))


def topics(loaded: LoadedModel, sim, run: dict) -> None:
    """Topics 7-11; `run` holds data, seed and the evaluation size the measured runs use."""
    topic_dynamic(loaded, run)
    topic_lowbit(loaded, run)
    topic_smoothquant(loaded, sim, run)
    topic_fp16(loaded, run)
    topic_mobilenet(loaded, run)
