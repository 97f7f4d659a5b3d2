"""Recover accuracy: CLE, bias correction, AdaRound, GPTQ, BRECQ and SmoothQuant against plain PTQ, layer by layer."""

from __future__ import annotations

import tempfile

import pandas as pd
import streamlit as st

from views._jobs import job_result, run_job
from views._errors import user_errors
from views._language import t
from views._settings import KEPT, base_config
from views._ui import layer_summary, page_header
from qcore.analysis.recovery import block_table, recover, rounding_table
from qcore.figures import (before_after_ranges_figure, channel_max_figure, recovery_accuracy_figure,
                           recovery_sqnr_figure)
from qcore.quant.qconfig import RECOVERY_STEPS, RecoveryStep
from qcore.quant.recovery.reconstruct import ACT_LR
from qcore.runtime.partial import sim_latency

JOB = "recover_job"


def _rounding_column(name: str) -> str:
    """rounding_table's column names for display ("layer", "<step> MSE", "<step> flipped")."""
    if name == "layer":
        return t("layer")
    if name.endswith(" flipped"):
        return t("{step} flipped").format(step=name.removesuffix(" flipped"))
    return name

s, loaded = page_header(t("Recover accuracy"), t("Plain PTQ, then each step added in turn, every combination calibrated "
                                                  "and scored end to end on the same images. Bits and granularity come "
                                                  "from the sidebar."))

with st.form("recover_form"):
    steps = st.multiselect(t("Steps, in order"), list(RECOVERY_STEPS), default=["cle", "bias_correction"],
                           key="recover_steps", **KEPT,
                           help=t("cle: cross-layer equalization with high-bias absorption (ReLU6 becomes ReLU in "
                                  "equalized pairs, as in DFQ). bias_correction: empirical, from calibration images. "
                                  "adaround/gptq: output-aware weight rounding. brecq: the rounding of each block's "
                                  "layers fitted at once to the block's output (BRECQ). smoothquant: LayerNorm -> "
                                  "Linear."))
    c1, c2, c3 = st.columns(3)
    iters = c1.number_input(t("Iterations (AdaRound: per layer, BRECQ: per block)"), 20, 5000, 500, step=100,
                            key="recover_iters", **KEPT)
    alpha = c2.slider(t("SmoothQuant alpha"), 0.0, 1.0, 0.5, 0.05, key="recover_alpha", **KEPT)
    separately = c3.toggle(t("Each step alone (then all)"), value=False, key="recover_separately", **KEPT)
    learn_steps = st.toggle(t("BRECQ: learn the activation step sizes too"), value=False, key="recover_act_steps",
                            **KEPT, help=t("Each block's activation step sizes are learned with its rounding (LSQ) and "
                                           "kept where they lower the block's error. Off by default: on the built-ins "
                                           "it moved top-1 by about 0.1 pt either way."))
    go = st.form_submit_button(t("Run"), type="primary")

if go:
    if not steps:
        st.error(t("Choose at least one step."))
        st.stop()
    params = {"adaround": (("iters", float(iters)),),
              "brecq": (("iters", float(iters)),) + ((("act_lr", ACT_LR),) if learn_steps else ()),
              "smoothquant": (("alpha", float(alpha)),)}
    chosen = [RecoveryStep(n, params.get(n, ())) for n in steps]
    run_job(JOB, "recovery", recover, remember=True, report_of=lambda result: result[0], model=loaded, steps=chosen,
            config=base_config(), data=s["data"].strip() or None, calib_size=int(s["calib_size"]),
            eval_size=min(int(s["eval_size"]), 2000), seed=int(s["seed"]), cumulative=not separately)

finished = job_result(JOB, t("Choose the steps and press **Run** (evaluation on up to 2000 test images)."))
if finished is None:
    st.stop()
report, sim = finished
layer_summary(report)
PLAIN = t("plain PTQ")
st.plotly_chart(recovery_accuracy_figure(report.rows, report.fp32_accuracy, y_title=t("top-1 %"), plain=PLAIN),
                key="rec_acc")
table = [{t("steps"): "+".join(r.steps) or PLAIN, t("top-1"): r.accuracy, t("agreement with FP32"): r.agreement,
          t("calibration s"): r.seconds, **{t("{step} s").format(step=k): v for k, v in r.step_seconds.items()}}
         for r in report.rows]
st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")
best = max(report.rows, key=lambda r: r.accuracy)
if st.button(t("Use {steps} in Sensitivity, QAT and Deploy").format(steps="+".join(best.steps) or PLAIN),
             key="use_best_recovery"):
    st.session_state["recovery_steps"] = tuple(RecoveryStep.from_dict(d) for d in report.config["recovery"]
                                               if d["name"] in best.steps)
    st.success(t("The sidebar now shows the steps; Sensitivity, QAT and Deploy build their models with them."))

st.subheader(t("Each layer's output SQNR, per combination"))
st.plotly_chart(recovery_sqnr_figure(report.rows, y_title=t("output SQNR (dB)"), plain=PLAIN), key="rec_sqnr")

st.subheader(t("Per-channel weight ranges before and after"))
layer = st.selectbox(t("Layer"), list(report.weights_before), key="recover_layer")
st.plotly_chart(before_after_ranges_figure(report.weights_before[layer], report.weights_after[layer], layer,
                                           x_title=t("output channel"), y_title=t("weight range"),
                                           names=(t("before"), t("after"))), key="rec_w")

changes = report.rows[-1].changes
rounding = rounding_table(report.rows)
if rounding:
    st.subheader(t("Rounding, layer by layer: layer-output MSE against FP32"))
    st.dataframe(pd.DataFrame(rounding).rename(columns=_rounding_column), hide_index=True, width="stretch")
    st.caption(t("nearest: round-to-nearest on the same grid. Run AdaRound and GPTQ with **Each step alone** to see "
                 "both side by side; the accuracy each gives is in the table above."))
blocks = block_table(report.rows)
if blocks:
    st.subheader(t("BRECQ, block by block: block-output MSE against FP32"))
    names = {"block": t("block"), "layers": t("layers"), "nearest MSE": t("nearest MSE"), "brecq MSE": t("BRECQ MSE"),
             "flipped": t("flipped"), "steps learned": t("steps learned"), "images": t("images")}
    st.dataframe(pd.DataFrame(blocks).rename(columns=names), hide_index=True, width="stretch")
    st.caption(t("A block ends where the rest of the network reads one tensor only (after a residual add); its layers' "
                 "rounding is fitted at once to the block's FP32 output, through its activation quantizers."))
    st.caption(t("steps learned: the block's activation step sizes learned with the rounding and kept (LSQ); 0 where "
                 "the learned ones gave a higher block error than the calibrated ones, which the block then keeps."))
if changes.get("smoothquant", {}).get("pairs"):
    st.subheader(t("SmoothQuant: activation maxima per channel"))
    norm = st.selectbox("LayerNorm", list(changes["smoothquant"]["pairs"]), key="recover_norm")
    pair = changes["smoothquant"]["pairs"][norm]
    st.plotly_chart(channel_max_figure(pair["act_max_before"], pair["act_max_after"], f"{norm} -> {pair['linears']}",
                                       x_title=t("input channel"), y_title=t("max |activation|"),
                                       names=(t("before"), t("after"))), key="rec_sq")

st.subheader(t("Real INT8 latency of the last combination"))
if st.button(t("Measure (ONNX Runtime, batch 1)"), key="recover_measure"):
    with st.spinner(t("Exporting and timing ...")), user_errors(), tempfile.TemporaryDirectory() as tmp:
        timed = sim_latency(sim, loaded.module, loaded.spec.input_shape, tmp)
    st.metric(t("INT8 vs FP32 (ONNX Runtime)"), f"{timed['speedup']:.2f}x",
              help=t("{int8} ms vs {fp32} ms").format(int8=f"{timed['int8_ms']:.3f}", fp32=f"{timed['fp32_ms']:.3f}"))
