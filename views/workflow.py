"""Workflow: the recommended path as one guided run, PTQ baseline -> recovery steps -> sensitivity and partial
quantization -> QAT only if still short, to the user's target, ending in real INT8 and a report."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from views._jobs import job_result, run_job
from views._cache import upload_dir
from views._language import t
from views._settings import KEPT, base_config
from views._ui import layer_summary, page_header
from qcore.figures import float_layers_curve_figure, workflow_steps_figure
from qcore.workflow import Target, WorkflowOptions, run_workflow
from qcore.workflow.document import recipe_text, recover_table, recover_text, skip_text, summary_rows, title, to_html, to_markdown

JOB = "workflow_job"
SCALES = {"channel": t("per-channel"), "tensor": t("per-tensor")}

s, loaded = page_header(t("Quantization workflow"), t(
    "Set a target, then one run walks the recommended path: (1) PTQ baseline with Max, Entropy, 99.99% and "
    "99.999% calibration; (2) accuracy recovery with the steps that fit the model (CLE, bias correction, AdaRound or "
    "GPTQ at 4 bits or fewer, SmoothQuant), keeping those that help; (3) sensitivity analysis and partial "
    "quantization, keeping the fewest layers in float that meet the target; (4) quantization-aware training (QAT) "
    "only if still short. Each step starts from the "
    "previous one's result and is skipped once the target is met. It ends with the model as real INT8, timed "
    "against FP32 on this CPU, and a report to download."))


def _target() -> Target | None:
    """The target from the form (None, with a message, when neither bound is set)."""
    try:
        return Target(max_drop=st.session_state["wf_drop"] / 100 if st.session_state["wf_use_drop"] else None,
                      min_speedup=st.session_state["wf_speedup"] if st.session_state["wf_use_speed"] else None)
    except ValueError as exc:
        st.error(t("Set an accuracy target, a speed target, or both.") if "both" in str(exc) else str(exc))
        return None


with st.form("workflow_form"):
    c1, c2 = st.columns(2)
    c1.checkbox(t("Accuracy target"), value=True, key="wf_use_drop", **KEPT)
    c1.number_input(t("At most this many points below FP32"), 0.0, 50.0, 1.0, 0.1, key="wf_drop", **KEPT)
    c2.checkbox(t("Speed target"), value=False, key="wf_use_speed", **KEPT)
    c2.number_input(t("INT8 at least this many times faster than FP32 (batch 1)"), 0.1, 20.0, 2.0, 0.1,
                    key="wf_speedup", **KEPT)
    c3, c4, c5 = st.columns(3)
    c3.number_input(t("Most layers step 3 may keep in float"), 1, 50, 5, key="wf_max_float", **KEPT)
    c4.toggle(t("Try recovery steps (step 2)"), value=True, key="wf_allow_recovery", **KEPT)
    c4.toggle(t("Allow QAT (step 4)"), value=True, key="wf_allow_qat", **KEPT)
    c5.slider(t("QAT budget: share of the original training schedule (%)"), 1, 10, 10, key="wf_qat_pct", **KEPT,
              help=t("The recipe: at most 10% of the model's original training steps, at its batch size, with the "
                     "learning rate at 1% of the original, annealed to zero."))
    c6, c7, c8 = st.columns(3)
    c6.number_input(t("Target weight bits"), 2, 8, int(s["weight_bits"]), key="wf_weight_bits", **KEPT,
                    help=t("The weight precision the model must reach (the sidebar's, unless changed here)."))
    c7.radio(t("Target weight scales"), ["channel", "tensor"], key="wf_granularity", **KEPT, horizontal=True,
             index=["channel", "tensor"].index(s["granularity"]), format_func=SCALES.get)
    c8.number_input(t("Evaluation images"), 100, 10_000, 1000, 100, key="wf_eval_size", **KEPT,
                    help=t("From the test split, chosen by the seed; every step is scored on the same images."))
    go = st.form_submit_button(t("Run the workflow"), type="primary")
config = base_config().with_default(weight_bits=int(st.session_state["wf_weight_bits"]),
                                    weight_granularity=st.session_state["wf_granularity"])
st.caption(t("Starting point: W{w} A{a}, {g} weights, {n} calibration images (activations and calibration images "
             "from the sidebar).").format(w=config.default.weight_bits, a=config.default.act_bits,
                                         g=SCALES[config.default.weight_granularity], n=int(s["calib_size"])))

if go and (target := _target()) is not None:
    options = WorkflowOptions(max_float=int(st.session_state["wf_max_float"]),
                              allow_qat=bool(st.session_state["wf_allow_qat"]),
                              qat_fraction=st.session_state["wf_qat_pct"] / 100,
                              allow_recovery=bool(st.session_state["wf_allow_recovery"]))
    run_job(JOB, "workflow", run_workflow, remember=True, model=loaded, target=target, config=config,
            options=options, data=s["data"].strip() or None, calib_size=int(s["calib_size"]),
            eval_size=int(st.session_state["wf_eval_size"]), seed=int(s["seed"]), out_dir=upload_dir() / "workflow")

report = job_result(JOB, t("Set the target and press **Run the workflow**."))
if report is None:
    st.stop()


def _figures(report) -> list:
    """The charts of the page and of the HTML report (same figures, translated titles)."""
    ran = [{"label": title(x.step, t), "accuracy": x.accuracy, "met": x.met} for x in report.steps if x.ran]
    if report.final and report.final.accuracy is not None:
        ran.append({"label": title("final", t), "accuracy": report.final.accuracy,
                    "met": bool(report.final.verdict and report.final.verdict.met)})
    drop = report.target.get("max_drop")
    figs = [(t("Accuracy after each step"), workflow_steps_figure(
        ran, report.fp32_accuracy, None if drop is None else report.fp32_accuracy - drop, y_title=t("top-1 %"),
        target_label=t("target")))]
    partial = report.step("partial")
    if partial.ran:
        figs.append((t("Step 3: layers kept in float"), float_layers_curve_figure(
            partial.detail.curve, report.fp32_accuracy, x_title=t("layers kept in float"), y_title=t("top-1 %"),
            speed_title=t("INT8 speedup vs FP32"))))
    return figs


layer_summary(report)
if report.met_by:
    st.success(t("The target is met by step {step}.").format(step=title(report.met_by, t)))
else:
    st.warning(t("No step met the target: the table shows how close each came."))
headers = [t("Step"), t("accuracy"), t("drop vs FP32 (pt)"), t("INT8 ms (batch 1)"), t("speedup"), t("target")]
st.dataframe(pd.DataFrame(summary_rows(report, t), columns=headers), hide_index=True, width="stretch")
figures = _figures(report)
for i, (heading, fig) in enumerate(figures):
    st.subheader(heading)
    st.plotly_chart(fig, key=f"wf_fig_{i}")
for step in report.steps:
    with st.expander(title(step.step, t), expanded=False):
        if not step.ran:
            st.write(skip_text(step, t))
        elif step.step == "ptq":
            st.dataframe(pd.DataFrame(step.detail.methods), hide_index=True)
        elif step.step == "recover":
            st.write(recover_text(step, t))
            headers, rows = recover_table(step, t)
            st.dataframe(pd.DataFrame(rows, columns=headers), hide_index=True)
        elif step.step == "partial":
            st.dataframe(pd.DataFrame(step.detail.ranking), hide_index=True)
        else:
            st.write(recipe_text(step, t))
            st.dataframe(pd.DataFrame(step.detail.history), hide_index=True)
for note in (report.final.notes if report.final else []) + report.notes:
    st.caption(note)
lang = st.session_state.get("lang_choice", "en")
c1, c2 = st.columns(2)
c1.download_button(t("Download the report (Markdown)"), to_markdown(report, t), f"workflow-{report.identity.model}-{lang}.md",
                   "text/markdown", key="wf_md")
c2.download_button(t("Download the report (HTML with charts)"), to_html(report, t, figures),
                   f"workflow-{report.identity.model}-{lang}.html", "text/html", key="wf_html")
