"""Diagnose page: which layers cause the drop, why (measured evidence), the fix as a config change, and the fix
applied and re-measured."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from views._jobs import job_result, run_job
from views._language import engine_text, t
from views._settings import KEPT, base_config, granularity_label
from views._ui import layer_summary, page_header
from qcore.analysis.diagnosis import apply_fix, diagnose
from qcore.analysis.diagnosis_causes import CAUSE_TITLES, HEALTHY_SQNR_DB, LEARN_TOPICS
from qcore.analysis.layers import folded_weight
from qcore.figures import channel_range_figure, histogram_figure

JOB, FIX_JOB = "diagnose_job", "diagnose_fix_job"
s, loaded = page_header(
    t("Diagnose"),
    t("One calibrated simulation, measured three ways: only its weights quantized, only its activations quantized, "
      "and per layer each side alone. Each layer's statistics then go through the cause detectors; each cause comes "
      "with its evidence, a config change that fixes it, and a button that applies the fix and measures it."),
)
with st.form("diagnose_form"):
    c1, c2 = st.columns([1, 3])
    eval_size = c1.number_input(t("Evaluation images"), min_value=50, max_value=10_000, value=1000, key="diag_eval_size", **KEPT)
    c2.caption(t("Config from the sidebar: W{wbits} {granularity} weights, A{abits} {symmetry} activations, max "
                 "calibration on {calib} images.").format(
        wbits=s["weight_bits"], granularity=granularity_label(s["granularity"]), abits=s["act_bits"],
        symmetry=t("symmetric") if s["symmetric"] else t("asymmetric"), calib=s["calib_size"]))
    go = st.form_submit_button(t("Run diagnosis"), type="primary")
if go:
    st.session_state.pop(FIX_JOB, None)
    run_job(JOB, "diagnose", diagnose, share=False, remember=True, report_of=lambda found: found.report,
            model=loaded, config=base_config(), data=s["data"] or None,
            calib_size=int(s["calib_size"]), eval_size=int(eval_size), seed=int(s["seed"]))

d = job_result(JOB, t("Press **Run diagnosis** to find what costs the model chosen in the sidebar its accuracy."))
if d is None:
    st.stop()
rep = d.report


def _pts(x: float) -> str:
    return t("{delta} pts").format(delta=f"{(x - rep.fp32_accuracy) * 100:+.2f}")


k = st.columns(4)
k[0].metric(t("FP32 top-1"), f"{rep.fp32_accuracy:.2%}")
k[1].metric(t("Quantized"), f"{rep.accuracy:.2%}", _pts(rep.accuracy))
k[2].metric(t("Weights only"), f"{rep.weights_only_accuracy:.2%}", _pts(rep.weights_only_accuracy))
k[3].metric(t("Activations only"), f"{rep.acts_only_accuracy:.2%}", _pts(rep.acts_only_accuracy))
if rep.weight_share is not None:
    st.caption(t("The weights account for {share} of the drop, the activations for the rest (each side quantized "
                 "alone, with the same calibrated ranges).").format(share=f"{rep.weight_share:.0%}"))
layer_summary(rep)
with st.expander(t("Per layer: output SQNR with only its weights, or only its activation, quantized")):
    st.dataframe(pd.DataFrame([{t("layer"): x.name, t("kind"): x.kind, t("weights only (dB)"): x.weight_sqnr_db,
                                t("activation only (dB)"): x.act_sqnr_db,
                                t("causes"): ", ".join(engine_text(CAUSE_TITLES[k]) for k in x.causes)}
                               for x in rep.layers]), hide_index=True, width="stretch")

st.subheader(t("Causes, worst layer first"))
if not rep.causes:
    st.success(t("No cause found: every quantized layer measures a healthy SQNR, or no detector fires."))
    st.stop()
rows = [{"#": i, t("layer"): c.layer, t("cause"): engine_text(c.title), t("layer SQNR dB"): c.layer_sqnr_db,
         t("noise removed by the fix (dB, estimated)"): round(c.severity_db, 1), t("fix"): c.fix.describe()}
        for i, c in enumerate(rep.causes, 1)]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption(t("Layer SQNR: this layer's output against float with only the side the cause sits on (its weights or "
             "its activation) quantized, on {n} images. Causes on layers at {healthy:g} dB or more are left out.")
           .format(n=rep.probe_images, healthy=HEALTHY_SQNR_DB))

# labels fixed in this run's language (a format_func called later could answer in another; see _settings). The
# browser keeps a selectbox's chosen label across reruns, so each language has its own widget: the sidebar's toggle
# then shows the causes in the new language (the choice starts again at the worst one).
labels = {i: f"#{i + 1} {c.layer}: {engine_text(c.title)}" for i, c in enumerate(rep.causes)}
pick = st.selectbox(t("Cause"), list(labels), key=f"diag_cause_{st.session_state.get('lang_choice', 'en')}",
                    format_func=labels.get)
cause = rep.causes[pick]
st.dataframe(pd.DataFrame([{t("evidence"): engine_text(e.name), t("value"): e.value} for e in cause.evidence]),
             hide_index=True, width="stretch")
if cause.histogram is not None:
    h = cause.histogram
    st.plotly_chart(histogram_figure(h.edges, h.counts, {m: {"clip_min": lo, "clip_max": hi} for m, (lo, hi) in h.ranges.items()},
                                     t("Calibration histogram of {layer}").format(layer=cause.layer), log_y=True,
                                     x_title=t("value"), y_title=t("count")), key="diag_hist")
elif cause.kind == "channel_spread":
    w = folded_weight(d.sim, cause.layer)
    w = w.reshape(w.shape[0], -1)
    st.plotly_chart(channel_range_figure(w.min(1).values.tolist(), w.max(1).values.tolist(),
                                         t("Per-channel weight ranges of {layer}").format(layer=cause.layer),
                                         x_title=t("output channel"), y_title=t("weight value")), key="diag_channels")
st.page_link("views/learn.py", label=t("Learn: {topic}").format(topic=engine_text(LEARN_TOPICS[cause.learn_topic])),
             icon=":material/school:", query_params={"topic": cause.learn_topic})
st.write(t("Fix: `{fix}`").format(fix=cause.fix.describe()))
if st.button(t("Apply fix and re-measure"), key="diag_apply"):
    run_job(FIX_JOB, "diagnose fix", apply_fix, share=False, d=d, cause=cause)
fixed = job_result(FIX_JOB, t("The fix is calibrated anew and measured on the same evaluation images."))
if fixed is not None:
    f = st.columns(2)
    f[0].metric(t("Before"), f"{fixed.before:.2%}")
    f[1].metric(t("After"), f"{fixed.after:.2%}", t("{delta} pts vs before").format(delta=f"{fixed.delta * 100:+.2f}"))
    st.caption(t("Applied `{fix}`; top-1 on {n} evaluation images.").format(fix=fixed.cause.fix.describe(),
                                                                          n=fixed.eval_size))
