"""QAT page: fine-tune the quantized model with fake quantization and watch accuracy, loss, learning
rate and the real INT8 model's accuracy and latency, epoch by epoch."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import streamlit as st

from views._jobs import job_result, run_job
from views._language import t
from views._settings import KEPT, chosen_config, granularity_label, recovery_steps, with_layer_edits
from views._ui import layer_summary, page_header
from qcore.quant.calibration import DEFAULT_METHODS
from qcore.figures import qat_accuracy_figure, qat_curve_figure
from qcore.train.qat import RANGE_MODES, QATRecipe, default_lr, run_qat
from qcore.quant.qconfig import QuantConfig

JOB_KEY = "qat_job"


def range_help(mode: str) -> str:
    """What each activation-range mode does, as the select box shows it (the values stay the engine's names)."""
    return {"fixed": t("fixed: the calibrated ranges stay as they are"),
            "observe": t("observe: ranges follow the training batches (moving-average min/max), then freeze"),
            "learn": t("learn: each activation scale is trained by gradient (LSQ)")}.get(mode, mode)


s, loaded = page_header(
    t("QAT: quantization-aware fine-tuning"),
    t("Fine-tunes the calibrated, fake-quantized model with straight-through gradients, starting from the "
      "FP32 weights. After every epoch it scores the simulation and the real INT8 model built from it "
      "(ONNX Runtime), and times INT8 against FP32 on this CPU. BatchNorm is folded into the convolutions, "
      "as in the deployed model; its statistics stay frozen unless you let them train for some steps first."),
)
auto_lr = default_lr(loaded)

with st.form("qat_form"):
    st.markdown(t("**Quantization** (granularity **{granularity}** and activation symmetry from the sidebar)").format(
        granularity=granularity_label(s['granularity'])))
    c1, c2, c3, c4 = st.columns(4)
    weight_bits = c1.selectbox(t("Weight bits"), [2, 3, 4, 5, 6, 7, 8], index=2, key="qat_weight_bits", **KEPT,
                               help=t("QAT pays off at low bit widths: 4-bit weights are the usual case"))
    act_bits = c2.selectbox(t("Activation bits"), [2, 3, 4, 5, 6, 7, 8], index=6, key="qat_act_bits", **KEPT,
                            help=t("Only 8-bit activations have real INT8 kernels; others are simulated only"))
    method = c3.selectbox(t("Calibration method"), list(DEFAULT_METHODS), key="qat_method", **KEPT,
                          help=t("The ranges QAT starts from"))
    config_file = c4.file_uploader(t("Config JSON (optional)"), type=["json"], key="qat_config_file",
                                   help=t("A partial or mixed-precision config from the sensitivity page; "
                                          "overrides the bit settings"))
    st.markdown(t("**Recipe**"))
    r1, r2, r3, r4 = st.columns(4)
    budget = r1.radio(t("Budget"), ["minutes", "steps"], horizontal=True, key="qat_budget", **KEPT,
                      format_func=lambda b: t("minutes") if b == "minutes" else t("training steps"))
    amount = r1.number_input(t("Minutes or steps"), min_value=0.1, max_value=5000.0, value=2.0, step=0.5,
                             key="qat_amount", **KEPT,
                             help=t("Minutes: as many steps as fit (measured step time, evaluations included)"))
    epochs = r2.number_input(t("Epochs (evaluation rounds)"), min_value=1, max_value=20, value=3, key="qat_epochs", **KEPT)
    batch_size = r2.number_input(t("Batch size"), min_value=4, max_value=512, value=64, step=16, key="qat_batch_size", **KEPT)
    lr = r3.number_input(t("Learning rate (0 = auto)"), min_value=0.0, max_value=0.1, value=0.0, format="%.6f",
                         key="qat_lr", **KEPT, help=t("Auto: 1% of the model's training rate, here {lr}").format(lr=f"{auto_lr:.2e}"))
    monitor_size = r3.number_input(t("Images scored per epoch"), min_value=100, max_value=10_000,
                                   value=max(100, min(2000, int(s["eval_size"]))), step=500, key="qat_monitor_size", **KEPT,
                                   help=t("The final comparison uses the sidebar's {n} evaluation images").format(
                                       n=int(s['eval_size'])))
    range_mode = r4.selectbox(t("Activation ranges"), RANGE_MODES, format_func=range_help, key="qat_range_mode", **KEPT)
    freeze_after = r4.number_input(t("Freeze observers after (steps)"), min_value=0, max_value=100_000, value=50,
                                   key="qat_freeze_after", **KEPT,
                                   help=t("For 'observe': the steps during which ranges follow the training data"))
    bn_freeze_after = r4.number_input(t("Train BN statistics for (steps)"), min_value=0, max_value=100_000, value=0,
                                      key="qat_bn_freeze_after", **KEPT,
                                      help=t("0: BN stays folded into the convolutions, as deployed, from the start. "
                                             "K: BN statistics train for K steps, then fold and freeze."))
    d1, d2, _ = st.columns([1, 1, 2])
    nproc = d1.number_input(t("Processes (DistributedDataParallel)"), 1, 16, 1, key="qat_nproc", **KEPT,
                            help=t("More than 1: DDP over that many processes (gloo on CPUs, NCCL on GPUs); the batch "
                                   "size is the global batch, split evenly, so the learning rate stays the same."))
    device = d2.selectbox(t("Training device"), ["auto", "cpu", "cuda"], key="qat_device", **KEPT,
                          help=t("auto: a CUDA GPU when there is one; evaluations and INT8 stay on the CPU."))
    start = st.form_submit_button(t("Start fine-tuning"), type="primary")

if start:
    try:
        config = chosen_config(config_file, with_layer_edits(QuantConfig(weight_range=s["weight_range"], recovery=recovery_steps()).with_default(
            weight_bits=int(weight_bits), act_bits=int(act_bits), act_method=method,
            weight_granularity=s["granularity"], act_symmetric=bool(s["symmetric"]))))
        steps = int(amount) if budget == "steps" else None
        recipe = QATRecipe(steps=steps, minutes=None if steps else float(amount), epochs=int(epochs),
                           batch_size=int(batch_size), lr=float(lr) or None, range_mode=range_mode,
                           freeze_after=int(freeze_after), bn_freeze_after=int(bn_freeze_after))
    except (ValueError, UnicodeDecodeError) as exc:
        st.error(t("Cannot start: {reason}").format(reason=exc))
        st.stop()
    run_job(JOB_KEY, "qat", run_qat, remember=True, report_of=lambda result: result.report, stream_metrics=True,
            model=loaded, config=config, recipe=recipe, data=s["data"] or None, calib_size=int(s["calib_size"]),
            eval_size=int(monitor_size), final_eval_size=int(s["eval_size"]), seed=int(s["seed"]),
            out_dir=Path("out") / "qat" / uuid.uuid4().hex[:8], nproc=int(nproc), device=device)


def draw_curves(metrics: list, key: str) -> None:
    """Accuracy per epoch, loss and learning rate per step, from the rows streamed so far (QATEpochRow,
    QATStepRow)."""
    epochs_rows = [m for m in metrics if m.kind == "epoch"]
    steps_rows = [m for m in metrics if m.kind == "step"]
    if epochs_rows:
        st.plotly_chart(qat_accuracy_figure(epochs_rows, title=t("Accuracy per epoch (epoch 0 = PTQ, before fine-tuning)"),
                                            x_title=t("epoch"), y_title=t("top-1"),
                                            names=(t("fake-quant (simulation)"), t("real INT8 (ONNX Runtime)"))),
                        key=f"{key}_acc")
    if steps_rows:
        c1, c2 = st.columns(2)
        c1.plotly_chart(qat_curve_figure(steps_rows, "loss", t("Training loss"), x_title=t("step")), key=f"{key}_loss")
        c2.plotly_chart(qat_curve_figure(steps_rows, "lr", t("Learning rate (cosine)"), x_title=t("step")),
                        key=f"{key}_lr")


finished = job_result(JOB_KEY, t("Set the recipe and press **Start fine-tuning**. You can leave the page: the run "
                                 "goes on."), live=lambda snap: draw_curves(snap["metrics"], "live"))
job = st.session_state.get(JOB_KEY)
if finished is None and job is not None and job.done:
    draw_curves(job.snapshot()["metrics"], "partial")  # a cancelled or failed run keeps what it measured
if finished is not None:
    r = finished.report
    pct = lambda x: t("n/a") if x is None else f"{x:.2%}"  # noqa: E731
    cols = st.columns(5)
    cols[0].metric(t("FP32 top-1"), pct(r.fp32_accuracy))
    cols[1].metric(t("PTQ top-1"), pct(r.ptq_accuracy))
    cols[2].metric(t("QAT top-1"), pct(r.qat_accuracy),
                   delta=t("{delta} pt vs PTQ").format(delta=f"{(r.qat_accuracy - r.ptq_accuracy) * 100:+.2f}"))
    cols[3].metric(t("QAT real INT8 top-1"), pct(r.int8_accuracy))
    cols[4].metric(t("Step cost vs FP32"), f"{r.step_overhead_vs_fp32:.2f}x",
                   help=t("{qat} ms vs {fp32} ms per step of {batch} images on {device}, interleaved").format(
                       qat=f"{r.step_times['qat_step_s'] * 1e3:.0f}", fp32=f"{r.step_times['fp32_step_s'] * 1e3:.0f}",
                       batch=r.step_times['batch'], device=r.step_times.get("device", "cpu")))
    layer_summary(r)
    d = r.distributed
    st.caption(t("Fine-tuned with DDP on {n} processes ({backend}, {device}).").format(
        n=d["world"], backend=d.get("backend"), device=d["device"]) if d["world"] > 1 else
        t("Fine-tuned in this process ({device}).").format(device=d["device"]))
    lat, size = r.latency_ms, r.size_bytes
    kb = lambda b: round(b / 1024, 1) if b else None  # noqa: E731
    pc = lambda x: None if x is None else round(100 * x, 2)  # noqa: E731
    table = pd.DataFrame([
        {"model": "FP32", "top-1 %": pc(r.fp32_accuracy), "real INT8 top-1 %": None,
         "size (KB)": kb(size.get("fp32_onnx")), "batch-1 ms (ONNX Runtime)": lat.get("fp32_ort")},
        {"model": "PTQ", "top-1 %": pc(r.ptq_accuracy), "real INT8 top-1 %": pc(r.ptq_int8_accuracy),
         "size (KB)": kb(size.get("ptq_int8_onnx")), "batch-1 ms (ONNX Runtime)": lat.get("ptq_int8")},
        {"model": "QAT", "top-1 %": pc(r.qat_accuracy), "real INT8 top-1 %": pc(r.int8_accuracy),
         "size (KB)": kb(size.get("qat_int8_onnx")), "batch-1 ms (ONNX Runtime)": lat.get("qat_int8")},
    ])
    st.dataframe(table.rename(columns={"model": t("model"), "top-1 %": t("top-1 %"),
                                       "real INT8 top-1 %": t("real INT8 top-1 %"), "size (KB)": t("size (KB)"),
                                       "batch-1 ms (ONNX Runtime)": t("batch-1 ms (ONNX Runtime)")}),
                 hide_index=True, width="stretch")
    st.caption(t("{n} test images; {steps} steps of {batch} in {seconds} s (run {total} s in all), learning rate {lr}, "
                 "ranges {ranges}.").format(n=r.eval_images, steps=r.steps, batch=r.recipe['batch_size'],
                                            seconds=f"{r.seconds:.0f}", total=f"{r.total_seconds:.0f}",
                                            lr=f"{r.recipe['lr']:.2e}", ranges=r.recipe['range_mode']))
    draw_curves(r.history + r.losses, "final")
    for note in r.notes:
        st.caption(note)
    out_dir = Path(r.out_dir)
    d1, d2, d3 = st.columns(3)
    if (out_dir / "qat_int8.onnx").is_file():
        d1.download_button(t("Download QAT INT8 model (ONNX)"), (out_dir / "qat_int8.onnx").read_bytes(),
                           file_name="qat_int8.onnx", mime="application/octet-stream")
    d2.download_button(t("Download report (JSON)"), finished.report.to_json(), file_name="qat_report.json",
                       mime="application/json")
    d3.download_button(t("Download config (JSON)"), json.dumps(r.config, indent=2), file_name="qat_config.json",
                       mime="application/json")
