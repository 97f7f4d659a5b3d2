"""Learn page: quantization fundamentals, interactive, on real numbers from the chosen model."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages._ui import layer_stats, page_header, user_errors, t
from qcore.analysis import learn
from qcore.analysis.layers import folded_weight
from qcore.figures import clipping_figure, staircase_figure, ste_figure

s, loaded = page_header(t("Learn: how quantization works"))
with user_errors():
    sim, stats = layer_stats(loaded, s["data"] or None, int(s["seed"]))

st.header("1. The affine mapping")
st.markdown(r"A float $x$ is stored as an integer $q = \mathrm{clamp}(\mathrm{round}(x / s) + z,\ q_{min},\ q_{max})$ "
            r"and read back as $\hat{x} = (q - z)\,s$. The scale $s$ and zero-point $z$ come from the clip range.")
c1, c2, c3, c4 = st.columns(4)
lo = c1.number_input("range min", value=-1.0, step=0.1, key="learn_lo")
hi = c2.number_input("range max", value=3.0, step=0.1, key="learn_hi")
bits = c3.slider("bits", 2, 8, 3)
sym = c4.toggle("symmetric", value=False)
if hi <= lo:
    st.error("range max must be larger than range min")
    st.stop()
m = learn.affine_mapping(lo, hi, bits, sym)
k = st.columns(4)
k[0].metric("scale s", f"{m['scale']:.5g}")
k[1].metric("zero-point z", m["zero_point"])
k[2].metric("integer range", f"[{m['qmin']}, {m['qmax']}]")
k[3].metric("levels", m["levels"])
st.caption(f"Representable floats: [{m['representable'][0]:.4g}, {m['representable'][1]:.4g}]. "
           f"min -> {m['codes']['min']}, 0 -> {m['codes']['0']} (zero is exact), max -> {m['codes']['max']}.")
st.plotly_chart(staircase_figure(*learn.staircase(lo, hi, bits, sym)), key="staircase")

st.header("2. Symmetric vs asymmetric, on a real activation")
names = list(stats)
layer = st.selectbox("Activation of " + loaded.name, names, index=min(1, len(names) - 1), key="learn_layer")
st.dataframe(pd.DataFrame(learn.symmetric_vs_asymmetric(stats[layer], 8)), hide_index=True, width="stretch")
st.caption(f"This activation spans [{stats[layer].min:.4g}, {stats[layer].max:.4g}]. After a ReLU it is never "
           "negative, so a symmetric grid spends half its levels on values that never occur.")

st.header("3. Per-tensor, per-channel, per-group weights")
wname = st.selectbox("Weight of", list(sim.weight_layers), key="learn_weight")
wbits = st.slider("weight bits", 2, 8, 4, key="learn_wbits")
weight = folded_weight(sim, wname)
st.dataframe(pd.DataFrame(learn.granularity_errors(weight, wbits)), hide_index=True, width="stretch")
st.caption(f"{wname}: {tuple(weight.shape)} (BN folded). One scale for the whole tensor must cover its widest "
           "channel; per-channel gives each output channel its own, per-group each block of input channels.")

st.header("4. Clipping vs rounding")
cbits = st.slider("activation bits", 2, 8, 4, key="learn_cbits")
st.plotly_chart(clipping_figure(learn.clipping_sweep(stats[layer], cbits, False), layer), key="clipping")
st.caption("A smaller clip range makes each step finer (less rounding error) but cuts off the tail (more clipping "
           "error). The `mse` calibration method picks the minimum of the total; fewer bits push it lower.")

st.header("5. FP32, FP16, BF16 and INT8")
st.dataframe(pd.DataFrame(learn.format_table(weight.flatten())).astype(str), hide_index=True, width="stretch")
st.caption(f"The last column is each format's error on the real weights of {wname}. BF16 keeps FP32's range with "
           "less precision; FP16 has more precision but overflows above 65504; INT8 needs a scale.")

st.header("6. Fake quantization and the straight-through estimator")
st.plotly_chart(ste_figure(learn.ste_curves(lo, hi, bits, sym)), key="ste")
st.caption("Rounding has zero gradient almost everywhere. QAT pretends it is the identity inside the clip range "
           "(gradient 1) and blocks the gradient outside it (0): the straight-through estimator, using the range "
           "from section 1.")
