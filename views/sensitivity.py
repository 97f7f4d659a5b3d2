"""Sensitivity page: which layers cause the drop, and what keeping them in float costs."""

from __future__ import annotations

import json
from dataclasses import asdict

import pandas as pd
import streamlit as st

from views._jobs import job_result, run_job
from views._errors import user_errors
from views._language import t
from views._settings import KEPT, base_config, granularity_label
from views._ui import layer_summary, page_header
from qcore.analysis.partial import (PRECISIONS, config_from_precisions, greedy_search, measure_config,
                                    sweep_layers)
from qcore.figures import pareto_figure, sensitivity_figure

JOB = "sensitivity_job"
ENGINES = {"local": t("this process"), "ray": "Ray"}
s, loaded = page_header(
    t("Sensitivity and partial quantization"),
    t("Two-sided per-layer sweep from one calibration pass: accuracy with only this layer quantized, and with "
      "every layer but this one quantized. Then keep the worst layers in float and see what that costs in "
      "accuracy and in real, measured INT8 latency."),
)

with st.form("sens_form"):
    c1, c2 = st.columns([1, 3])
    eval_size = c1.number_input(t("Evaluation images"), min_value=50, max_value=10_000, value=1000, key="sens_eval_size", **KEPT)
    c2.caption(t("Base config from the sidebar: W{wbits} {granularity} weights, A{abits} {symmetry} activations, max "
                 "calibration on {calib} images.").format(
        wbits=s['weight_bits'], granularity=granularity_label(s['granularity']), abits=s['act_bits'],
        symmetry=t("symmetric") if s['symmetric'] else t("asymmetric"), calib=s['calib_size']))
    e1, e2, e3 = st.columns([1, 2, 1])
    engine = e1.radio(t("Run the sweep on"), ["local", "ray"], key="sens_executor", **KEPT, horizontal=True,
                      format_func=ENGINES.get)
    address = e2.text_input(t("Ray cluster address"), key="sens_ray_address", **KEPT, placeholder="ray://HOST:10001",
                            help=t("Empty: a Ray instance on this machine (or $RAY_ADDRESS when set)."))
    workers = e3.number_input(t("Ray workers (local instance)"), 1, 256, 2, key="sens_ray_workers", **KEPT)
    go_sweep = st.form_submit_button(t("Run sensitivity sweep"), type="primary")

if go_sweep:
    from qcore.run.executors import make_executor

    with user_errors():
        executor = make_executor(address.strip() or "ray", int(workers)) if engine == "ray" else None
    run_job(JOB, "sensitivity", sweep_layers, remember=True, report_of=lambda result: result.report,
            model=loaded, config=base_config(), data=s["data"] or None, calib_size=int(s["calib_size"]),
            eval_size=int(eval_size), seed=int(s["seed"]), executor=executor)

res = job_result(JOB, t("Press **Run sensitivity sweep** to measure every layer of the model chosen in the sidebar."))
if res is None:
    st.stop()
p, rep = res.prepared, res.report
c = st.columns(4)
c[0].metric(t("FP32 top-1"), f"{rep.fp32_accuracy:.2%}")
c[1].metric(t("All layers quantized"), f"{rep.base_accuracy:.2%}",
            t("{delta} pts").format(delta=f"{(rep.base_accuracy - rep.fp32_accuracy) * 100:+.2f}"))
c[2].metric(t("Layers"), len(rep.layers))
c[3].metric(t("Sweep time"), f"{rep.seconds:.0f} s",
            help=t("{n} evaluations of {images} images").format(n=2 * len(rep.layers) + 1, images=rep.eval_size))
st.caption(t("Ran on {engine} with {n} worker(s).").format(engine=ENGINES.get(rep.executor["engine"]),
                                                         n=rep.executor["workers"]))
layer_summary(rep)

df = pd.DataFrame([asdict(r) for r in rep.layers])
figure = sensitivity_figure(rep.layers, rep.fp32_accuracy, rep.base_accuracy, y_title=t("top-1 %"), y2_title=t("SQNR dB"),
                            names=(t("only this layer quantized"), t("all but this layer quantized"), t("output SQNR (dB)")))
event = st.plotly_chart(figure, key="sens_chart", on_select="rerun", selection_mode="points")
if event and event.selection and event.selection.get("points"):
    picked = event.selection["points"][0].get("x")
    if picked in set(df["name"]):
        st.session_state["calib_layer_request"] = picked
        st.switch_page("views/calibration.py")
st.caption(t("Click a layer to open its histogram on the calibration page (after a calibration run there)."))
st.dataframe(df.rename(columns={"name": t("layer"), "kind": t("kind"), "only_this_quantized": t("only this quantized"),
                                "all_but_this": t("all but this"), "sqnr_db": t("SQNR dB"), "mse": t("MSE"),
                                "cosine": t("cosine")}), hide_index=True, width="stretch")

st.subheader(t("Your partial / mixed-precision config"))
st.caption(t("int8: W8A8. int4 weights: 4-bit weights (deploy on an INT8 grid). A16: 16-bit activations, simulated only "
             "(no CPU kernel: the accuracy is real, the INT8 latency re-measure refuses it). float: the layer stays FP32."))
grid = pd.DataFrame({"layer": df["name"], "kind": df["kind"], "precision": "int8"})
edited = st.data_editor(grid, hide_index=True, width="stretch", key="precision_grid", disabled=["layer", "kind"],
                        column_config={"layer": st.column_config.TextColumn(t("layer")),
                                       "kind": st.column_config.TextColumn(t("kind")),
                                       "precision": st.column_config.SelectboxColumn(
                                           t("precision"), options=list(PRECISIONS), required=True)})
current = config_from_precisions(p.base_config, dict(zip(edited["layer"], edited["precision"])),
                                 dict(zip(edited["layer"], edited["kind"])))
b1, b2 = st.columns(2)
if b1.button(t("Re-measure accuracy and real latency"), key="re_measure"):
    from qcore.runtime.partial import latency_probe

    run_job("measure_job", "measure", measure_config, exclusive=True, prepared=p, config=current, latency_probe=latency_probe)
b2.download_button(t("Export this config (JSON)"), current.to_json(), file_name=f"{p.loaded.name}-config.json",
                   mime="application/json")
m = job_result("measure_job", t("Set layers to float or INT4 above, then re-measure."))
if m is not None:
    k = st.columns(4)
    k[0].metric(t("Top-1"), f"{m.accuracy:.2%}",
                t("{delta} pts vs FP32").format(delta=f"{(m.accuracy - rep.fp32_accuracy) * 100:+.2f}"))
    k[1].metric(t("INT8 latency (ONNX Runtime, batch 1)"), f"{m.latency_ms:.3f} ms")
    k[2].metric(t("Speedup vs FP32 ONNX Runtime"), f"{m.speedup:.2f}x")
    k[3].metric(t("Weights"), f"{m.weight_bytes / 1024:.0f} KB")

st.subheader(t("Greedy float fallback"))
budget = st.slider(t("Accuracy budget: allowed drop vs FP32 (points)"), 0.0, 5.0, 0.5, 0.1, key="greedy_budget")
max_float = st.number_input(t("At most this many float layers"), 1, len(df), min(8, len(df)), key="greedy_max_float")
if st.button(t("Run greedy search (measures latency at every step)"), key="run_greedy"):
    from qcore.runtime.partial import latency_probe

    run_job("greedy_job", "greedy", greedy_search, exclusive=True, prepared=p, report=rep, budget=budget / 100,
            max_float=int(max_float), latency_probe=latency_probe)
greedy = job_result("greedy_job", t("Choose a budget and run the search."))
if greedy is not None:
    g = greedy
    curve = pd.DataFrame([{t("float layers"): len(pt.float_layers), t("top-1"): pt.accuracy,
                           t("INT8 ms"): pt.latency_ms, t("FP32 ms"): pt.fp32_ms,
                           t("speedup"): pt.fp32_ms / pt.latency_ms, t("weights KB"): pt.weight_bytes / 1024,
                           t("added"): (pt.float_layers or [t("(none)")])[-1]} for pt in g.curve])
    verdict = t("Budget **met** with {n} float layer(s): {layers}.") if g.met else t(
        "Budget **not met** with {n} float layer(s): {layers}.")
    st.write(verdict.format(n=len(g.float_layers), layers=", ".join(g.float_layers) or t("none")))
    st.plotly_chart(pareto_figure(g.curve, rep.fp32_accuracy, m, x_title=t("measured INT8 latency, batch 1 (ms)"),
                                  y_title=t("top-1 %"), names=(t("greedy curve"), t("your config"))), key="pareto")
    st.caption(t("Numbers on the points: how many layers are in float. Each point's latency was measured on this CPU, "
                 "so the cost of the quantize/dequantize transitions partial quantization adds is included."))
    st.dataframe(curve, hide_index=True, width="stretch")
    st.download_button(t("Export the greedy config (JSON)"), json.dumps(g.config, indent=2),
                       file_name=f"{p.loaded.name}-greedy-config.json", mime="application/json")
