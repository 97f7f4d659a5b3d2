"""Sensitivity page: which layers cause the drop, and what keeping them in float costs."""

from __future__ import annotations

import json
from dataclasses import asdict

import pandas as pd
import streamlit as st

from pages._ui import base_config, job_result, layer_summary, page_header, run_job, t
from qcore.analysis.partial import (PRECISIONS, config_from_precisions, greedy_search, measure_config,
                                    sweep_layers)
from qcore.figures import pareto_figure, sensitivity_figure

JOB = "sensitivity_job"
s, loaded = page_header(
    t("Sensitivity and partial quantization"),
    t("Two-sided per-layer sweep from one calibration pass: accuracy with only this layer quantized, and with "
      "every layer but this one quantized. Then keep the worst layers in float and see what that costs in "
      "accuracy and in real, measured INT8 latency."),
)

with st.form("sens_form"):
    c1, c2 = st.columns([1, 3])
    eval_size = c1.number_input("Evaluation images", min_value=50, max_value=10_000, value=1000)
    c2.caption(f"Base config from the sidebar: W{s['weight_bits']} per-{s['granularity']} weights, A{s['act_bits']} "
               f"{'symmetric' if s['symmetric'] else 'asymmetric'} activations, max calibration on "
               f"{s['calib_size']} images.")
    go_sweep = st.form_submit_button("Run sensitivity sweep", type="primary")

if go_sweep:
    run_job(JOB, "sensitivity", sweep_layers, remember=True, report_of=lambda result: result.report,
            model=loaded, config=base_config(), data=s["data"] or None, calib_size=int(s["calib_size"]),
            eval_size=int(eval_size), seed=int(s["seed"]))

res = job_result(JOB, "Press **Run sensitivity sweep** to measure every layer of the model chosen in the sidebar.")
if res is None:
    st.stop()
p, rep = res.prepared, res.report
c = st.columns(4)
c[0].metric("FP32 top-1", f"{rep.fp32_accuracy:.2%}")
c[1].metric("All layers quantized", f"{rep.base_accuracy:.2%}", f"{(rep.base_accuracy - rep.fp32_accuracy) * 100:+.2f} pts")
c[2].metric("Layers", len(rep.layers))
c[3].metric("Sweep time", f"{rep.seconds:.0f} s", help=f"{2 * len(rep.layers) + 1} evaluations of {rep.eval_size} images")
layer_summary(rep)

df = pd.DataFrame([asdict(r) for r in rep.layers])
event = st.plotly_chart(sensitivity_figure(rep.layers, rep.fp32_accuracy, rep.base_accuracy),
                        key="sens_chart", on_select="rerun", selection_mode="points")
if event and event.selection and event.selection.get("points"):
    picked = event.selection["points"][0].get("x")
    if picked in set(df["name"]):
        st.session_state["calib_layer_request"] = picked
        st.switch_page("pages/calibration.py")
st.caption("Click a layer to open its histogram on the calibration page (after a calibration run there).")
st.dataframe(df.rename(columns={"only_this_quantized": "only this quantized", "all_but_this": "all but this",
                                "sqnr_db": "SQNR dB"}), hide_index=True, width="stretch")

st.subheader(t("Your partial / mixed-precision config"))
st.caption("int8: W8A8. int4 weights: 4-bit weights (deploy on an INT8 grid). A16: 16-bit activations, simulated only "
           "(no CPU kernel: the accuracy is real, the INT8 latency re-measure refuses it). float: the layer stays FP32.")
grid = pd.DataFrame({"layer": df["name"], "kind": df["kind"], "precision": "int8"})
edited = st.data_editor(grid, hide_index=True, width="stretch", key="precision_grid", disabled=["layer", "kind"],
                        column_config={"precision": st.column_config.SelectboxColumn(
                            "precision", options=list(PRECISIONS), required=True)})
current = config_from_precisions(p.base_config, dict(zip(edited["layer"], edited["precision"])),
                                 dict(zip(edited["layer"], edited["kind"])))
b1, b2 = st.columns(2)
if b1.button("Re-measure accuracy and real latency"):
    from qcore.runtime.partial import latency_probe

    run_job("measure_job", "measure", measure_config, prepared=p, config=current, latency_probe=latency_probe)
b2.download_button("Export this config (JSON)", current.to_json(), file_name=f"{p.loaded.name}-config.json",
                   mime="application/json")
m = job_result("measure_job", "Set layers to float or INT4 above, then re-measure.")
if m is not None:
    k = st.columns(4)
    k[0].metric("Top-1", f"{m.accuracy:.2%}", f"{(m.accuracy - rep.fp32_accuracy) * 100:+.2f} pts vs FP32")
    k[1].metric("INT8 latency (ONNX Runtime, batch 1)", f"{m.latency_ms:.3f} ms")
    k[2].metric("Speedup vs FP32 ONNX Runtime", f"{m.speedup:.2f}x")
    k[3].metric("Weights", f"{m.weight_bytes / 1024:.0f} KB")

st.subheader(t("Greedy float fallback"))
budget = st.slider("Accuracy budget: allowed drop vs FP32 (points)", 0.0, 5.0, 0.5, 0.1)
max_float = st.number_input("At most this many float layers", 1, len(df), min(8, len(df)))
if st.button("Run greedy search (measures latency at every step)"):
    from qcore.runtime.partial import latency_probe

    run_job("greedy_job", "greedy", greedy_search, prepared=p, report=rep, budget=budget / 100,
            max_float=int(max_float), latency_probe=latency_probe)
greedy = job_result("greedy_job", "Choose a budget and run the search.")
if greedy is not None:
    g = greedy
    curve = pd.DataFrame([{"float layers": len(pt.float_layers), "top-1": pt.accuracy,
                           "INT8 ms": pt.latency_ms, "FP32 ms": pt.fp32_ms,
                           "speedup": pt.fp32_ms / pt.latency_ms, "weights KB": pt.weight_bytes / 1024,
                           "added": (pt.float_layers or ["(none)"])[-1]} for pt in g.curve])
    st.write(("Budget **met**" if g.met else "Budget **not met**") + f" with {len(g.float_layers)} float "
             f"layer(s): {', '.join(g.float_layers) or 'none'}.")
    st.plotly_chart(pareto_figure(g.curve, rep.fp32_accuracy, m), key="pareto")
    st.caption("Numbers on the points: how many layers are in float. Each point's latency was measured on this CPU, "
               "so the cost of the quantize/dequantize transitions partial quantization adds is included.")
    st.dataframe(curve, hide_index=True, width="stretch")
    st.download_button("Export the greedy config (JSON)", json.dumps(g.config, indent=2),
                       file_name=f"{p.loaded.name}-greedy-config.json", mime="application/json")
