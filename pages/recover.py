"""Recover accuracy: CLE, bias correction, AdaRound, GPTQ and SmoothQuant against plain PTQ, layer by layer."""

from __future__ import annotations

import tempfile

import pandas as pd
import streamlit as st

from pages._ui import base_config, job_result, layer_summary, page_header, run_job, t, user_errors
from qcore.analysis.recovery import recover, rounding_table
from qcore.figures import (before_after_ranges_figure, channel_max_figure, recovery_accuracy_figure,
                           recovery_sqnr_figure)
from qcore.quant.qconfig import RECOVERY_STEPS, RecoveryStep
from qcore.runtime.partial import sim_latency

JOB = "recover_job"
s, loaded = page_header(t("Recover accuracy"), "Plain PTQ, then each step added in turn, every combination calibrated and "
                        "scored end to end on the same images. Bits and granularity come from the sidebar.")

with st.form("recover_form"):
    steps = st.multiselect("Steps, in order", list(RECOVERY_STEPS), default=["cle", "bias_correction"],
                           help="cle: cross-layer equalization with high-bias absorption (ReLU6 becomes ReLU in "
                                "equalized pairs, as in DFQ). bias_correction: empirical, from calibration images. "
                                "adaround/gptq: output-aware weight rounding. smoothquant: LayerNorm -> Linear.")
    c1, c2, c3 = st.columns(3)
    iters = c1.number_input("AdaRound iterations per layer", 20, 5000, 500, step=100)
    alpha = c2.slider("SmoothQuant alpha", 0.0, 1.0, 0.5, 0.05)
    separately = c3.toggle("Each step alone (then all)", value=False)
    go = st.form_submit_button("Run", type="primary")

if go:
    if not steps:
        st.error("Choose at least one step.")
        st.stop()
    params = {"adaround": (("iters", float(iters)),), "smoothquant": (("alpha", float(alpha)),)}
    chosen = [RecoveryStep(n, params.get(n, ())) for n in steps]
    run_job(JOB, "recovery", recover, remember=True, report_of=lambda result: result[0], model=loaded, steps=chosen,
            config=base_config(), data=s["data"].strip() or None, calib_size=int(s["calib_size"]),
            eval_size=min(int(s["eval_size"]), 2000), seed=int(s["seed"]), cumulative=not separately)

finished = job_result(JOB, "Choose the steps and press **Run** (evaluation on up to 2000 test images).")
if finished is None:
    st.stop()
report, sim = finished
layer_summary(report)
st.plotly_chart(recovery_accuracy_figure(report.rows, report.fp32_accuracy), key="rec_acc")
table = [{"steps": "+".join(r.steps) or "plain PTQ", "top-1": r.accuracy, "agreement with FP32": r.agreement,
          "calibration s": r.seconds, **{f"{k} s": v for k, v in r.step_seconds.items()}} for r in report.rows]
st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")
best = max(report.rows, key=lambda r: r.accuracy)
if st.button(f"Use {'+'.join(best.steps) or 'plain PTQ'} in Sensitivity, QAT and Deploy"):
    st.session_state["recovery_steps"] = tuple(RecoveryStep.from_dict(d) for d in report.config["recovery"]
                                               if d["name"] in best.steps)
    st.success("The sidebar now shows the steps; Sensitivity, QAT and Deploy build their models with them.")

st.subheader(t("Each layer's output SQNR, per combination"))
st.plotly_chart(recovery_sqnr_figure(report.rows), key="rec_sqnr")

st.subheader(t("Per-channel weight ranges before and after"))
layer = st.selectbox("Layer", list(report.weights_before))
st.plotly_chart(before_after_ranges_figure(report.weights_before[layer], report.weights_after[layer], layer), key="rec_w")

changes = report.rows[-1].changes
rounding = rounding_table(report.rows)
if rounding:
    st.subheader(t("Rounding, layer by layer: layer-output MSE against FP32"))
    st.dataframe(pd.DataFrame(rounding), hide_index=True, width="stretch")
    st.caption("nearest: round-to-nearest on the same grid. Run AdaRound and GPTQ with **Each step alone** to see "
               "both side by side; the accuracy each gives is in the table above.")
if changes.get("smoothquant", {}).get("pairs"):
    st.subheader(t("SmoothQuant: activation maxima per channel"))
    norm = st.selectbox("LayerNorm", list(changes["smoothquant"]["pairs"]))
    pair = changes["smoothquant"]["pairs"][norm]
    st.plotly_chart(channel_max_figure(pair["act_max_before"], pair["act_max_after"], f"{norm} -> {pair['linears']}"),
                    key="rec_sq")

st.subheader(t("Real INT8 latency of the last combination"))
if st.button("Measure (ONNX Runtime, batch 1)"):
    with st.spinner("Exporting and timing ..."), user_errors(), tempfile.TemporaryDirectory() as tmp:
        timed = sim_latency(sim, loaded.module, loaded.spec.input_shape, tmp)
    st.metric("INT8 vs FP32 (ONNX Runtime)", f"{timed['speedup']:.2f}x",
              help=f"{timed['int8_ms']:.3f} ms vs {timed['fp32_ms']:.3f} ms")
