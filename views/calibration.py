"""Calibration page: one statistics pass, then every method's clipping range on every layer."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import streamlit as st

from views._jobs import job_result, run_job
from views._language import t
from views._settings import KEPT, granularity_label
from views._ui import layer_summary, page_header
from views._whatif import whatif_editor
from qcore.analysis.layers import channel_spread, has_unbounded_activations, method_ranges
from qcore.figures import (accuracy_figure, channel_range_figure, histogram_figure, method_color, overview_figure,
                           weight_histogram_figure)

JOB_KEY = "calibration_job"
s, loaded = page_header(
    t("Calibration explorer"),
    t("One pass over the calibration images collects a histogram at every activation quantizer. Each method "
      "(max, percentile, entropy, mse) is a pure function of those statistics: the lines on the histogram and "
      "the accuracy below come from the same numbers."),
)
with st.form("calibration_form"):
    c1, c2 = st.columns([1, 3])
    eval_size = c1.number_input(t("Evaluation images"), min_value=50, max_value=10_000,
                                value=max(50, min(2000, int(s["eval_size"]))), key="calib_eval_size", **KEPT,
                                help=t("Accuracy is measured for 4 methods x 3 bit widths; fewer images = faster"))
    c2.caption(t("Model **{model}**, {calib} calibration images, W{wbits} {granularity} weights, {symmetry} activations "
                 "at {abits}, 6 and 4 bits (change these in the sidebar).").format(
        model=s['model'], calib=s['calib_size'], wbits=s['weight_bits'], granularity=granularity_label(s['granularity']),
        symmetry=t("symmetric") if s['symmetric'] else t("asymmetric"), abits=s['act_bits']))
    go = st.form_submit_button(t("Run calibration"), type="primary")

if go:
    from qcore.analysis.experiments import calibration_study

    bits = tuple(dict.fromkeys([int(s["act_bits"]), 8, 6, 4]))[:3]  # the sidebar's width first, then 8, 6, 4
    run_job(JOB_KEY, "calibration", calibration_study, remember=True, report_of=lambda result: result[0],
            model=loaded, data=s["data"] or None, calib_size=int(s["calib_size"]), eval_size=int(eval_size),
            weight_bits=int(s["weight_bits"]), granularity=s["granularity"], symmetric=bool(s["symmetric"]),
            seed=int(s["seed"]), act_bits=bits, weight_range=s["weight_range"])

finished = job_result(JOB_KEY, t("Press **Run calibration** to collect statistics for the model chosen in the sidebar."))
if finished is None:
    st.stop()
study, sim = finished  # the report, and the sim whose statistics the histograms below come from
accuracy_rows = [asdict(row) for row in study.accuracy]  # by attribute: to_dict() copies the weights every rerun
st.caption(t("{model} on {data}: {calib} calibration images (train split), statistics pass {seconds} s; accuracy on "
             "{n} test images.").format(model=study.identity.model, data=study.identity.data, calib=study.identity.calib_size,
                                         seconds=f"{study.stats_pass_seconds:.2f}", n=study.eval_size))
layer_summary(study)

st.subheader(t("End-to-end accuracy per method and activation bit width"))
st.plotly_chart(accuracy_figure(accuracy_rows, study.fp32_accuracy, y_title=t("top-1 %")), key="acc")
acc = pd.DataFrame(accuracy_rows).pivot(index="method", columns="act_bits", values="accuracy")
st.table(acc.rename(columns=lambda b: f"A{b} top-1").rename_axis(index=t("method")).style.format("{:.2%}"))
for row in study.accuracy:  # a method refused at a width (entropy below 3 bits) says so, and what ran instead
    if row.note:
        st.info(t("{method} at {bits}-bit activations: {reason}").format(method=row.method, bits=row.act_bits,
                                                                         reason=row.note))

st.subheader(t("All layers"))
layers = [p["name"] for p in study.points]
if st.session_state.get("calib_layer_request") in layers:  # a click on another page asked for this layer
    st.session_state["calib_layer"] = st.session_state.pop("calib_layer_request")
overview = overview_figure(study.ranges, study.layer_sqnr_db, layers,
                           titles=(t("clip range per layer"), t("output SQNR per layer (dB, higher is better)")))
event = st.plotly_chart(overview, key="overview", on_select="rerun", selection_mode="points")
picked = None
if event and event.selection and event.selection.get("points"):
    picked = event.selection["points"][0].get("x")
if picked in layers:
    st.session_state["calib_layer"] = picked

st.subheader(t("One layer"))
c1, c2, c3 = st.columns([3, 1, 2])
layer = c1.selectbox(t("Layer"), layers, key="calib_layer", format_func=lambda n: f"{n} ({study.point_type(n)})")
log_y = c2.toggle(t("Log y"), value=True, key="calib_log_y")
pct = c3.select_slider(t("Percentile"), options=[99.0, 99.9, 99.99, 99.999, 99.9999], value=99.99, key="calib_pct")
bits = study.act_bits[0]
stats = sim.stats[layer]
results = method_ranges(stats, ["max", f"percentile:{pct:g}", "entropy", "mse"], bits, study.symmetric)
hist = stats.histogram()
hist_title = t("{layer}: {count} values, min {min}, max {max}").format(
    layer=layer, count=f"{stats.count:,}", min=f"{stats.min:.4g}", max=f"{stats.max:.4g}")
st.plotly_chart(histogram_figure(hist.edges.numpy(), hist.counts.numpy(), {m: x.to_dict() for m, x in results.items()},
                                 hist_title, log_y, x_title=t("value"), y_title=t("count"), values_name=t("values")),
                key="hist")
METHOD, ZERO_POINT = t("method"), t("zero-point")
table = pd.DataFrame([{
    METHOD: m, t("clip min"): x.clip_min, t("clip max"): x.clip_max, t("scale"): x.scale, ZERO_POINT: x.zero_point,
    t("clipping error"): x.clip_error, t("rounding error"): x.rounding_error, t("total error"): x.total_error,
} for m, x in results.items()])
st.dataframe(table.style.format({c: "{:.4g}" for c in table.columns if c not in (METHOD, ZERO_POINT)})
             .apply(lambda col: [f"color: {method_color(m)}" for m in table[METHOD]], subset=[METHOD]),
             hide_index=True, width="stretch")
st.caption(t("Errors are expected squared errors per value at {bits}-bit activations, estimated from the histogram: "
             "clipping = values beyond the range; rounding = step² / 12 for values inside it.").format(bits=bits))
whatif_editor(loaded, layer, study.eval_size)

weights = study.weights.get(layer)
if weights:
    st.subheader(t("Weights of this layer (BN folded)"))
    w1, w2 = st.columns(2)
    w1.plotly_chart(weight_histogram_figure(weights["values"], log_y, title=t("weight distribution"),
                                            x_title=t("value"), y_title=t("count")), key="whist")
    w2.plotly_chart(channel_range_figure(weights["min"], weights["max"], t("per-output-channel range"),
                                         x_title=t("output channel"), y_title=t("weight value"),
                                         names=(t("max"), t("min"))), key="wch")
    spread = channel_spread(weights["min"], weights["max"])
    st.caption(t("The widest channel's range is {spread}x the median channel's. With per-tensor weights every "
                 "channel shares the widest range, so narrow channels keep only a few quantization levels; per-channel "
                 "scales fix that (the MobileNetV2-style model's depthwise layers show it best).").format(
        spread=f"{spread:.1f}"))

if has_unbounded_activations(study.points):
    st.subheader(t("Clipping the activation function (GELU10)"))
    st.caption(t("GELU and SiLU are unbounded above, so a few large outputs stretch the quantization range and every "
                 "other value loses resolution. Clamping the activation's output (GELU10: to [-10, 10]) bounds the "
                 "range before calibration. This re-runs calibration on a clipped copy and compares max and "
                 "percentile calibration with and without the clamp."))
    c1, c2 = st.columns([3, 1])
    bound = c1.slider(t("Clip bound"), min_value=0.5, max_value=20.0, value=10.0, step=0.5, key="clip_bound")
    if c2.button(t("Run clipping experiment"), key="run_clipping"):
        from qcore.analysis.experiments import clipping_experiment

        run_job("clipping_job", "clipping", clipping_experiment, model=loaded, bound=float(bound),
                act_bits=int(study.act_bits[0]), calib_size=int(s["calib_size"]), eval_size=int(study.eval_size),
                seed=int(s["seed"]), data=s["data"] or None, weight_range=s["weight_range"])
    clip = job_result("clipping_job", t("Choose a bound and run the experiment."))
    if clip is not None:
        df = pd.DataFrame([asdict(row) for row in clip.rows])
        st.dataframe(df.pivot(index="method", columns="model", values="accuracy").rename_axis(index=t("method"))
                     .style.format("{:.2%}"), width="stretch")
        fp = df.groupby("model")["fp32_accuracy"].first()
        st.caption(t("Clamped {n} activations to ±{bound}; FP32 accuracy {fp32}; {bits}-bit activations.").format(
            n=clip.clipped_activations, bound=f"{clip.bound:g}", bits=clip.act_bits,
            fp32=", ".join(f"{k}: {v:.2%}" for k, v in fp.items())))
