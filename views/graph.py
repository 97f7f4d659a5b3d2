"""Graph page: the model's data-flow graph, nodes coloured by a measured metric; a click on a node shows its layer."""

from __future__ import annotations

import streamlit as st

from views._cache import model_identity, remember_graph, shared_graphs
from views._jobs import job_result, run_job
from views._language import t
from views._settings import KEPT, base_config, granularity_label
from views._ui import page_header
from qcore.analysis.graph_layout import (MAX_NODES, METRICS, auto_collapse, blocks, compare_values, hover_text, layout,
                                         metric_value, node_lines)
from qcore.analysis.graph_metrics import loaded_model_graph, stats_name, weight_summary
from qcore.analysis.layers import channel_spread, method_ranges
from qcore.figures import (channel_range_figure, graph_compare_figure, graph_figure, histogram_figure,
                           weight_histogram_figure)
from qcore.quant.calibration import DEFAULT_METHODS
from qcore.run.jobs import JobStatus

JOB = "graph_job"
s, loaded = page_header(
    t("Model graph"),
    t("Which layer causes the accuracy drop, and why? Every node of the simulated model (layers, activation "
      "quantizers, adds, pools, activations) in data-flow order, coloured by a number measured on this model: the "
      "quantized output against the float one, the quantizer's clipping and rounding error, the range, the bits."),
)
METRIC_NAMES = {"sqnr": t("output SQNR (dB)"), "clip_error": t("clipping error"), "rounding_error": t("rounding error"),
                "range": t("output range (max - min)"), "bits": t("bits"), "quantized": t("quantized (1) or float (0)"),
                "sensitivity": t("top-1, only this layer quantized")}
HOVER = {"sqnr": t("output SQNR"), "float_range": t("float output range"), "quant_range": t("quantized output range"),
         "clip": t("clip range"), "clip_error": t("clipping error"), "rounding_error": t("rounding error"),
         "precision": t("precision"), "quantized": t("quantized"), "sensitivity": t("top-1, only this layer quantized"),
         "members": t("nodes inside")}


def sensitivity_rows():
    """The per-layer rows of this session's finished Sensitivity sweep of this same model (None: there is none)."""
    ticket = st.session_state.get("sensitivity_job")
    snap = ticket.snapshot() if ticket is not None else None
    if not snap or snap["status"] != JobStatus.DONE:
        return None, None
    report = snap["result"].report
    if report.identity.model_id != loaded.info.get("sha256", "")[:16]:
        return None, None
    return report.layers, t("the Sensitivity page's sweep ({n} images)").format(n=report.eval_size)


with st.form("graph_form"):
    c1, c2 = st.columns([1, 3])
    calib = c1.number_input(t("Calibration images"), min_value=8, max_value=4096, value=64, key="graph_calib", **KEPT,
                            help=t("SQNR and output ranges are measured on the first 16 of them"))
    c2.caption(t("Model **{model}**, W{wbits} {granularity} weights, A{abits} {symmetry} activations, max calibration "
                 "(change these in the sidebar). Sensitivity colours come from a finished sweep on the Sensitivity "
                 "page.").format(model=s["model"], wbits=s["weight_bits"], granularity=granularity_label(s["granularity"]),
                                 abits=s["act_bits"], symmetry=t("symmetric") if s["symmetric"] else t("asymmetric")))
    go = st.form_submit_button(t("Build the graph"), type="primary")

config = base_config()
rows, rows_from = sensitivity_rows()
request = (model_identity(loaded), config.to_json(), s["data"], int(calib), int(s["seed"]), rows_from)
if go and request not in shared_graphs():
    st.session_state["graph_request"] = request
    run_job(JOB, "graph", loaded_model_graph, model=loaded, config=config, data=s["data"] or None,
            calib_size=int(calib), seed=int(s["seed"]), sensitivity=rows, sensitivity_from=rows_from)
if request in shared_graphs():
    graph, sim = shared_graphs()[request]
else:
    finished = job_result(JOB, t("Press **Build the graph** to measure every node of the model chosen in the sidebar."))
    if finished is None:
        st.stop()
    graph, sim = finished
    if st.session_state.get("graph_request") == request:
        remember_graph(request, finished)
    elif (graph.model, graph.calib_images, graph.config) != (loaded.name, int(calib), config.resolved().to_dict()):
        st.info(t("The settings changed since this graph was built: press **Build the graph**."))
        st.stop()

st.caption(t("{model}: {nodes} nodes, {edges} edges; quantizers calibrated on {calib} images, SQNR and ranges measured "
             "on {probe}.").format(model=graph.model, nodes=len(graph.nodes), edges=len(graph.edges),
                                   calib=graph.calib_images, probe=graph.probe_images))
metrics = [m for m in METRICS if m != "sensitivity" or graph.sensitivity_from]
for key, allowed in (("graph_metric", metrics), ("graph_node", [n.id for n in graph.nodes])):
    if st.session_state.get(key) not in allowed:  # a choice from another model or graph: back to the default
        st.session_state.pop(key, None)
c1, c2 = st.columns([1, 2])
metric = c1.selectbox(t("Colour nodes by"), metrics, key="graph_metric", format_func=METRIC_NAMES.get)
if "graph_expand_request" in st.session_state:  # a click on a block asked to open it (before the widget draws)
    st.session_state["graph_expand"] = [*st.session_state.get("graph_expand", []),
                                        st.session_state.pop("graph_expand_request")]
full_view, _depth = auto_collapse(graph, MAX_NODES)
options = blocks(full_view)
st.session_state["graph_expand"] = [b for b in st.session_state.get("graph_expand", []) if b in options]
expand = c2.multiselect(t("Blocks drawn node by node"), options, key="graph_expand",
                        help=t("Repeated blocks are collapsed into one node each (hexagons); click one to open it."))
view, _depth = auto_collapse(graph, MAX_NODES, tuple(expand))
places = layout(view)
hover = {n.id: hover_text(n, HOVER) for n in view.nodes}
if graph.sensitivity_from and metric == "sensitivity":
    st.caption(t("Sensitivity from {source}.").format(source=graph.sensitivity_from))
figure = graph_figure(view, places, {n.id: metric_value(n, metric) for n in view.nodes}, hover, METRIC_NAMES[metric],
                      METRICS[metric])
event = st.plotly_chart(figure, key="graph_chart", on_select="rerun", selection_mode="points")
points = (event.selection.get("points") if event and event.selection else None) or []
picked = points[0].get("customdata") if points else None
picked = picked[0] if isinstance(picked, list) else picked
new_click = picked != st.session_state.get("graph_clicked")  # the chart keeps its selection over reruns: act once
st.session_state["graph_clicked"] = picked
if new_click and isinstance(picked, str) and picked.startswith("block:") and picked[6:] not in expand:
    st.session_state["graph_expand_request"] = picked[6:]
    st.rerun()

st.subheader(t("One node"))
detailed = [n for n in graph.nodes if stats_name(sim, n) is not None or n.kind in ("conv", "linear")]
ids = [n.id for n in detailed]
if new_click and picked in ids:
    st.session_state["graph_node"] = picked
node_id = st.selectbox(t("Node (or click one in the graph)"), ids, key="graph_node",
                       format_func=lambda i: f"{graph.node(i).label} ({graph.node(i).kind})")
node = graph.node(node_id)
st.markdown(f"**{node.label}**\n\n" + "\n".join(f"- {line}" for line in node_lines(node, HOVER)))
name = stats_name(sim, node)
if name is not None:
    cfg, stats = sim.config.for_layer(name), sim.stats[name]
    results = method_ranges(stats, list(DEFAULT_METHODS), cfg.act_bits, cfg.act_symmetric)
    hist = stats.histogram()
    st.plotly_chart(histogram_figure(
        hist.edges.numpy(), hist.counts.numpy(), {m: r.to_dict() for m, r in results.items()},
        t("{layer}: {count} values, min {min}, max {max}").format(layer=name, count=f"{stats.count:,}",
                                                                  min=f"{stats.min:.4g}", max=f"{stats.max:.4g}"),
        True, x_title=t("value"), y_title=t("count"), values_name=t("values")), key="graph_hist")
    st.caption(t("Each calibration method's clip range on this activation at {bits} bits, from the same statistics "
                 "pass that calibrated the graph.").format(bits=cfg.act_bits))
if node.kind in ("conv", "linear"):
    weights = weight_summary(sim, node.layer)
    w1, w2 = st.columns(2)
    w1.plotly_chart(weight_histogram_figure(weights["values"], True, title=t("weight distribution"), x_title=t("value"),
                                            y_title=t("count")), key="graph_whist")
    w2.plotly_chart(channel_range_figure(weights["min"], weights["max"], t("per-output-channel range"),
                                         x_title=t("output channel"), y_title=t("weight value"),
                                         names=(t("max"), t("min"))), key="graph_wch")
    st.caption(t("The widest channel's range is {spread}x the median channel's.").format(
        spread=f"{channel_spread(weights['min'], weights['max']):.1f}"))

st.subheader(t("Float and quantized side by side"))
compared = st.radio(t("Compare by"), ["range", "bits"], key="graph_compare", horizontal=True,
                    format_func=METRIC_NAMES.get)
st.plotly_chart(graph_compare_figure(view, places, {n.id: compare_values(n, compared) for n in view.nodes}, hover,
                                     METRIC_NAMES[compared], (t("float model"), t("quantized model"))),
                key="graph_compare_chart")
