"""Sensitivity page: which layers cause the drop, and what keeping them in float costs."""

from __future__ import annotations

import json
import tempfile

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages._ui import base_config, current_model, job_result, settings, start_job, user_errors
from qcore.quant.qconfig import QuantConfig

JOB = "sensitivity_job"
st.title("Sensitivity and partial quantization")
st.caption("Two-sided per-layer sweep from one calibration pass: accuracy with only this layer quantized, and with "
           "every layer but this one quantized. Then keep the worst layers in float and see what that costs in "
           "accuracy and in real, measured INT8 latency.")
s = settings()
with user_errors():
    loaded = current_model()

with st.form("sens_form"):
    c1, c2 = st.columns([1, 3])
    eval_size = c1.number_input("Evaluation images", min_value=50, max_value=10_000, value=1000)
    c2.caption(f"Base config from the sidebar: W{s['weight_bits']} per-{s['granularity']} weights, A{s['act_bits']} "
               f"{'symmetric' if s['symmetric'] else 'asymmetric'} activations, max calibration on "
               f"{s['calib_size']} images.")
    go_sweep = st.form_submit_button("Run sensitivity sweep", type="primary")

if go_sweep:
    kw = dict(model=loaded, config=base_config(), data=s["data"] or None, calib_size=int(s["calib_size"]),
              eval_size=int(eval_size), seed=int(s["seed"]))

    def work(j):
        from qcore.analysis.sensitivity import prepare, sweep

        j.update(0.0, "calibrating (one statistics pass)")
        p = prepare(**kw)
        return {"prepared": p, "report": sweep(p, progress=lambda msg, f=None: j.update(f, msg))}

    start_job(JOB, "sensitivity", work, remember_as="sensitivity", report_of=lambda r: r["report"])

res = job_result(JOB, "Press **Run sensitivity sweep** to measure every layer of the model chosen in the sidebar.")
if res is None:
    st.stop()
p, rep = res["prepared"], res["report"]
c = st.columns(4)
c[0].metric("FP32 top-1", f"{rep['fp32_accuracy']:.2%}")
c[1].metric("All layers quantized", f"{rep['base_accuracy']:.2%}", f"{(rep['base_accuracy'] - rep['fp32_accuracy']) * 100:+.2f} pts")
c[2].metric("Layers", len(rep["layers"]))
c[3].metric("Sweep time", f"{rep['seconds']:.0f} s", help=f"{2 * len(rep['layers']) + 1} evaluations of {rep['eval_size']} images")
if rep.get("unsupported_layers"):
    st.warning(f"Left in float, no quantizer for these layer types: {', '.join(rep['unsupported_layers'])}.")

df = pd.DataFrame(rep["layers"])
fig = go.Figure()
fig.add_trace(go.Bar(x=df["name"], y=df["only_this_quantized"] * 100, name="only this layer quantized", marker_color="#d62728"))
fig.add_trace(go.Bar(x=df["name"], y=df["all_but_this"] * 100, name="all but this layer quantized", marker_color="#1f77b4"))
fig.add_trace(go.Scatter(x=df["name"], y=df["sqnr_db"], name="output SQNR (dB)", yaxis="y2", mode="lines+markers",
                         line=dict(color="#2ca02c")))
fig.add_hline(y=rep["fp32_accuracy"] * 100, line_dash="dash", annotation_text="FP32")
low = min(df["only_this_quantized"].min(), df["all_but_this"].min(), rep["base_accuracy"]) * 100
fig.update_layout(barmode="group", height=440, yaxis=dict(title="top-1 %", range=[max(0, low - 2), 100]),
                  yaxis2=dict(title="SQNR dB", overlaying="y", side="right"), xaxis=dict(tickangle=-60),
                  legend=dict(orientation="h", y=1.12), margin=dict(l=10, r=10, t=40, b=120))
event = st.plotly_chart(fig, key="sens_chart", on_select="rerun", selection_mode="points")
if event and event.selection and event.selection.get("points"):
    picked = event.selection["points"][0].get("x")
    if picked in set(df["name"]):
        st.session_state["calib_layer_request"] = picked
        st.switch_page("pages/calibration.py")
st.caption("Click a layer to open its histogram on the calibration page (after a calibration run there).")
st.dataframe(df.rename(columns={"only_this_quantized": "only this quantized", "all_but_this": "all but this",
                                "sqnr_db": "SQNR dB"}), hide_index=True, width="stretch")

st.subheader("Your partial / mixed-precision config")
st.caption("int8: W8A8. int4 weights: 4-bit weights (deploy on an INT8 grid). A16: 16-bit activations, simulated only "
           "(no CPU kernel: the accuracy is real, the INT8 latency re-measure refuses it). float: the layer stays FP32.")
grid = pd.DataFrame({"layer": df["name"], "kind": df["kind"], "precision": "int8"})
edited = st.data_editor(grid, hide_index=True, width="stretch", key="precision_grid", disabled=["layer", "kind"],
                        column_config={"precision": st.column_config.SelectboxColumn(
                            "precision", options=["int8", "int4 weights", "A16 activations", "float"], required=True)})


def config_from_grid(table: pd.DataFrame) -> QuantConfig:
    cfg = p.base_config
    for _, row in table.iterrows():
        if row["precision"] == "float":
            cfg = cfg.with_layer(row["layer"], enabled=False)
        elif row["precision"] == "int4 weights" and row["kind"] in ("conv", "linear"):
            cfg = cfg.with_layer(row["layer"], weight_bits=4)
        elif row["precision"] == "A16 activations":
            cfg = cfg.with_layer(row["layer"], act_bits=16)
    return cfg


current = config_from_grid(edited)
b1, b2 = st.columns(2)
if b1.button("Re-measure accuracy and real latency"):
    def measure(j):
        from qcore.analysis.sensitivity import evaluate_config, latency_probe, weight_bytes

        j.update(0.1, "accuracy")
        acc = evaluate_config(p, current)
        j.update(0.5, "building the INT8 model and timing it")
        with tempfile.TemporaryDirectory() as tmp:
            probe = latency_probe(p, tmp)
            ms = probe(current)
        return {"accuracy": acc["accuracy"], "latency_ms": ms, "fp32_ms": probe.fp32_ms[-1],
                "weight_bytes": weight_bytes(p, current), "config": current.to_dict(),
                "float_layers": [n for n, c in current.layers if not c.enabled]}

    start_job("measure_job", "measure", measure)
b2.download_button("Export this config (JSON)", current.to_json(), file_name=f"{p.loaded.name}-config.json",
                   mime="application/json")
m = job_result("measure_job", "Set layers to float or INT4 above, then re-measure.")
if m is not None:
    k = st.columns(4)
    k[0].metric("Top-1", f"{m['accuracy']:.2%}", f"{(m['accuracy'] - rep['fp32_accuracy']) * 100:+.2f} pts vs FP32")
    k[1].metric("INT8 latency (ONNX Runtime, batch 1)", f"{m['latency_ms']:.3f} ms")
    k[2].metric("Speedup vs FP32 ONNX Runtime", f"{m['fp32_ms'] / m['latency_ms']:.2f}x")
    k[3].metric("Weights", f"{m['weight_bytes'] / 1024:.0f} KB")

st.subheader("Greedy float fallback")
budget = st.slider("Accuracy budget: allowed drop vs FP32 (points)", 0.0, 5.0, 0.5, 0.1)
max_float = st.number_input("At most this many float layers", 1, len(df), min(8, len(df)))
if st.button("Run greedy search (measures latency at every step)"):
    def greedy(j):
        from qcore.analysis.sensitivity import float_layers, greedy_fallback, latency_probe, weight_bytes

        with tempfile.TemporaryDirectory() as tmp:
            probe = latency_probe(p, tmp)
            g = greedy_fallback(p, rep, budget=budget / 100, max_float=int(max_float), latency=probe,
                                progress=lambda msg, f=None: j.update(f, msg))
        for point, fp32_ms in zip(g["curve"], probe.fp32_ms):
            point["fp32_ms"] = fp32_ms
            point["weight_bytes"] = weight_bytes(p, float_layers(p.base_config, point["float_layers"]))
        return g

    start_job("greedy_job", "greedy", greedy)
g = job_result("greedy_job", "Choose a budget and run the search.")
if g is not None:
    curve = pd.DataFrame([{"float layers": len(pt["float_layers"]), "top-1": pt["accuracy"],
                           "INT8 ms": pt["latency_ms"], "FP32 ms": pt["fp32_ms"],
                           "speedup": pt["fp32_ms"] / pt["latency_ms"], "weights KB": pt["weight_bytes"] / 1024,
                           "added": (pt["float_layers"] or ["(none)"])[-1]} for pt in g["curve"]])
    st.write(("Budget **met**" if g["met"] else "Budget **not met**") + f" with {len(g['float_layers'])} float "
             f"layer(s): {', '.join(g['float_layers']) or 'none'}.")
    pareto = go.Figure(go.Scatter(x=curve["INT8 ms"], y=curve["top-1"] * 100, mode="lines+markers+text",
                                  text=curve["float layers"], textposition="top center", name="greedy curve"))
    if m is not None:
        pareto.add_trace(go.Scatter(x=[m["latency_ms"]], y=[m["accuracy"] * 100], mode="markers", name="your config",
                                    marker=dict(size=14, symbol="star", color="#d62728")))
    pareto.add_hline(y=rep["fp32_accuracy"] * 100, line_dash="dash", annotation_text="FP32")
    pareto.update_layout(height=400, xaxis_title="measured INT8 latency, batch 1 (ms)", yaxis_title="top-1 %",
                         margin=dict(l=10, r=10, t=20, b=40))
    st.plotly_chart(pareto, key="pareto")
    st.caption("Numbers on the points: how many layers are in float. Each point's latency was measured on this CPU, "
               "so the cost of the quantize/dequantize transitions partial quantization adds is included.")
    st.dataframe(curve, hide_index=True, width="stretch")
    st.download_button("Export the greedy config (JSON)", json.dumps(g["config"], indent=2),
                       file_name=f"{p.loaded.name}-greedy-config.json", mime="application/json")
