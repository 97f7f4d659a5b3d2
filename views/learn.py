"""Learn page: quantization fundamentals, interactive, on real numbers from the chosen model."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from views._learn_anchor import anchor, scroll_to_requested_topic
from views._learn_questions import questions
from views._learn_topics import topics
from views._cache import layer_stats
from views._errors import user_errors
from views._language import t
from views._ui import data_name_for, page_header
from qcore.analysis import learn
from qcore.analysis.layers import folded_weight
from qcore.figures import clipping_figure, staircase_figure, ste_figure

COLUMNS = {  # table headers in the session's language
    "scheme": t("scheme"), "clip range": t("clip range"), "scale": t("scale"), "zero-point": t("zero-point"),
    "levels used": t("levels used"), "levels available": t("levels available"), "total error": t("total error"),
    "granularity": t("granularity"), "scales": t("scales"), "sqnr_db": t("SQNR (dB)"), "mse": t("MSE"),
    "format": t("format"), "bits": t("bits"), "max": t("max"), "smallest normal": t("smallest normal"),
    "relative precision (eps)": t("relative precision (eps)"), "SQNR on these values (dB)": t("SQNR on these values (dB)"),
}
s, loaded = page_header(t("Learn: how quantization works"))
scroll_to_requested_topic()  # a diagnosis cause linked to one section
with user_errors():
    sim, stats = layer_stats(loaded, s["data"] or None, int(s["seed"]))

st.header(t("1. The affine mapping"))
st.markdown(t(r"A float $x$ is stored as an integer $q = \mathrm{clamp}(\mathrm{round}(x / s) + z,\ q_{min},\ q_{max})$ "
              r"and read back as $\hat{x} = (q - z)\,s$. The scale $s$ and zero-point $z$ come from the clip range."))
c1, c2, c3, c4 = st.columns(4)
lo = c1.number_input(t("range min"), value=-1.0, step=0.1, key="learn_lo")
hi = c2.number_input(t("range max"), value=3.0, step=0.1, key="learn_hi")
bits = c3.slider(t("bits"), 2, 8, 3)
sym = c4.toggle(t("symmetric"), value=False)
if hi <= lo:
    st.error(t("range max must be larger than range min"))
    st.stop()
m = learn.affine_mapping(lo, hi, bits, sym)
k = st.columns(4)
k[0].metric(t("scale s"), f"{m['scale']:.5g}")
k[1].metric(t("zero-point z"), m["zero_point"])
k[2].metric(t("integer range"), f"[{m['qmin']}, {m['qmax']}]")
k[3].metric(t("levels"), m["levels"])
st.caption(t("Representable floats: [{lo:.4g}, {hi:.4g}]. min -> {cmin}, 0 -> {c0} (zero is exact), max -> {cmax}.")
           .format(lo=m["representable"][0], hi=m["representable"][1], cmin=m["codes"]["min"], c0=m["codes"]["0"],
                   cmax=m["codes"]["max"]))
st.plotly_chart(staircase_figure(*learn.staircase(lo, hi, bits, sym)), key="staircase")

st.header(t("2. Symmetric vs asymmetric, on a real activation"), anchor=anchor("symmetric"))
names = list(stats)
layer = st.selectbox(t("Activation of {model}").format(model=loaded.name), names, index=min(1, len(names) - 1), key="learn_layer")
st.dataframe(pd.DataFrame(learn.symmetric_vs_asymmetric(stats[layer], 8)).replace(
    {"scheme": {"asymmetric": t("asymmetric"), "symmetric": t("symmetric")}}).rename(columns=COLUMNS),
    hide_index=True, width="stretch")
st.caption(t("This activation spans [{lo:.4g}, {hi:.4g}]. After a ReLU it is never negative, so a symmetric grid "
             "spends half its levels on values that never occur.").format(lo=stats[layer].min, hi=stats[layer].max))

st.header(t("3. Per-tensor, per-channel, per-group weights"), anchor=anchor("granularity"))
wname = st.selectbox(t("Weight of"), list(sim.weight_layers), key="learn_weight")
wbits = st.slider(t("weight bits"), 2, 8, 4, key="learn_wbits")
weight = folded_weight(sim, wname)
st.dataframe(pd.DataFrame(learn.granularity_errors(weight, wbits)).rename(columns=COLUMNS), hide_index=True,
             width="stretch")
st.caption(t("{layer}: {shape} (BN folded). One scale for the whole tensor must cover its widest channel; per-channel "
             "gives each output channel its own, per-group each block of input channels.").format(
    layer=wname, shape=tuple(weight.shape)))

st.header(t("4. Clipping vs rounding"), anchor=anchor("clipping"))
cbits = st.slider(t("activation bits"), 2, 8, 4, key="learn_cbits")
st.plotly_chart(clipping_figure(learn.clipping_sweep(stats[layer], cbits, False), layer), key="clipping")
st.caption(t("A smaller clip range makes each step finer (less rounding error) but cuts off the tail (more clipping "
             "error). The `mse` calibration method picks the minimum of the total; fewer bits push it lower."))

st.header(t("5. FP32, FP16, BF16 and INT8"))
st.dataframe(pd.DataFrame(learn.format_table(weight.flatten())).astype(str).rename(columns=COLUMNS), hide_index=True,
             width="stretch")
st.caption(t("The last column is each format's error on the real weights of {layer}. BF16 keeps FP32's range with "
             "less precision; FP16 has more precision but overflows above {fp16:g}; INT8 needs a scale.").format(
    layer=wname, fp16=learn.format_table()[1]["max"]))

st.header(t("6. Fake quantization and the straight-through estimator"))
st.plotly_chart(ste_figure(learn.ste_curves(lo, hi, bits, sym)), key="ste")
st.caption(t("Rounding has zero gradient almost everywhere. QAT pretends it is the identity inside the clip range "
             "(gradient 1) and blocks the gradient outside it (0): the straight-through estimator, using the range "
             "from section 1."))

st.divider()
st.header(t("Claims checked on this model"))
st.caption(t("Each topic states a claim from the literature, measures it on {model} and marks it ✓ (holds here), "
             "✗ (does not) or – (does not apply), by the rule shown under it.").format(model=loaded.name))
eval_size = st.number_input(t("Evaluation images for the measured runs"), min_value=100, max_value=10_000, value=1000,
                            step=500, key="learn_eval_size")
run = {"data": s["data"] or None, "seed": int(s["seed"]), "eval_size": int(eval_size), "weight_range": s["weight_range"]}
with user_errors():
    topics(loaded, sim, run)
    st.divider()
    questions(loaded, sim, run, data_name_for(loaded))
