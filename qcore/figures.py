"""Plotly figure builders: pure functions, data in, go.Figure out (no streamlit here).

Colours are fixed per path kind so a path looks the same on every page.
"""

from __future__ import annotations

import plotly.graph_objects as go

__all__ = ["PATH_COLORS", "METHOD_COLORS", "method_color", "latency_figure", "speedup_figure", "histogram_figure",
           "channel_range_figure", "overview_figure", "accuracy_figure", "qat_accuracy_figure", "qat_curve_figure",
           "runs_compare_figure", "comparable_metrics", "weight_histogram_figure", "sensitivity_figure",
           "pareto_figure", "staircase_figure", "clipping_figure", "ste_figure"]

PATH_COLORS = {"fp32": "#7f7f7f", "int8": "#1f77b4", "dynamic": "#ff7f0e", "bf16": "#2ca02c", "fp16": "#9467bd"}


def workflow_steps_figure(steps: list[dict], fp32_accuracy: float, target_accuracy: float | None,
                          y_title: str = "top-1 %", fp32_label: str = "FP32", target_label: str = "target") -> go.Figure:
    """The guided workflow's accuracy after each step that ran (`steps`: {"label", "accuracy", "met"}),
    green where the step met the target, with FP32 and the accuracy target as lines."""
    fig = go.Figure(go.Bar(x=[s["label"] for s in steps], y=[s["accuracy"] * 100 for s in steps],
                           marker_color=["#2ca02c" if s["met"] else "#d62728" for s in steps],
                           text=[f"{s['accuracy']:.1%}" for s in steps], textposition="outside"))
    fig.add_hline(y=fp32_accuracy * 100, line_dash="dash", annotation_text=f"{fp32_label} {fp32_accuracy:.1%}")
    if target_accuracy is not None:
        fig.add_hline(y=target_accuracy * 100, line_dash="dot", line_color="#2ca02c",
                      annotation_text=f"{target_label} {target_accuracy:.1%}", annotation_position="bottom right")
    low = min([s["accuracy"] for s in steps] + [target_accuracy or fp32_accuracy]) * 100
    fig.update_layout(yaxis_title=y_title, yaxis_range=[max(0.0, low - 5), 100], height=360,
                      margin=dict(l=10, r=10, t=30, b=40), showlegend=False)
    return fig


def float_layers_curve_figure(curve: list, fp32_accuracy: float, x_title: str = "layers kept in float",
                              y_title: str = "top-1 %", speed_title: str = "INT8 speedup vs FP32") -> go.Figure:
    """Accuracy and measured speedup as the workflow's step 3 keeps more layers in float (`curve`: the
    qcore.workflow.report.CurvePoint of each point)."""
    xs = [len(c.float_layers) for c in curve]
    fig = go.Figure(go.Scatter(x=xs, y=[c.accuracy * 100 for c in curve], mode="lines+markers", name=y_title))
    fig.add_trace(go.Scatter(x=xs, y=[c.speedup for c in curve], mode="lines+markers", name=speed_title,
                             yaxis="y2", line=dict(dash="dot")))
    fig.add_hline(y=fp32_accuracy * 100, line_dash="dash", annotation_text="FP32")
    fig.update_layout(height=360, xaxis_title=x_title, yaxis_title=y_title, xaxis=dict(dtick=1),
                      yaxis2=dict(title=speed_title, overlaying="y", side="right"),
                      margin=dict(l=10, r=10, t=30, b=40), legend=dict(orientation="h", y=1.12))
    return fig


__all__ += ["workflow_steps_figure", "float_layers_curve_figure"]


def latency_figure(latency: dict[str, dict], kinds: dict[str, str], title: str,
                   x_title: str = "milliseconds (median, whiskers p10-p90)") -> go.Figure:
    """Median latency per path with p10-p90 whiskers; `latency` maps path -> {median_ms, p10_ms, p90_ms}.
    Axis titles are parameters (English by default) so pages can pass them in the user's language."""
    names = sorted(latency, key=lambda n: latency[n]["median_ms"])
    med = [latency[n]["median_ms"] for n in names]
    fig = go.Figure(go.Bar(
        x=med, y=names, orientation="h",
        marker_color=[PATH_COLORS.get(kinds.get(n, "fp32"), "#444") for n in names],
        error_x=dict(type="data", symmetric=False,
                     array=[latency[n]["p90_ms"] - latency[n]["median_ms"] for n in names],
                     arrayminus=[latency[n]["median_ms"] - latency[n]["p10_ms"] for n in names]),
        text=[f"{m:.2f} ms" for m in med], textposition="outside",
        hovertemplate="%{y}: median %{x:.3f} ms<extra></extra>",
    ))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis=dict(autorange="reversed"),
                      height=80 + 38 * len(names), margin=dict(l=10, r=30, t=50, b=40))
    return fig


def speedup_figure(speedups: dict[str, float], kinds: dict[str, str], baseline: str,
                   y_title: str = "speedup vs fastest FP32", baseline_label: str = "fastest FP32 ({baseline})") -> go.Figure:
    """Speedup of each path against the fastest FP32 path (1.0 = as fast)."""
    names = sorted(speedups, key=speedups.get, reverse=True)
    fig = go.Figure(go.Bar(
        x=names, y=[speedups[n] for n in names],
        marker_color=[PATH_COLORS.get(kinds.get(n, "int8"), "#444") for n in names],
        text=[f"{speedups[n]:.2f}x" for n in names], textposition="outside",
    ))
    fig.add_hline(y=1.0, line_dash="dash", annotation_text=baseline_label.format(baseline=baseline))
    fig.update_layout(yaxis_title=y_title, height=360, margin=dict(l=10, r=10, t=30, b=40))
    return fig


METHOD_COLORS = {"max": "#d62728", "percentile": "#2ca02c", "entropy": "#9467bd", "mse": "#ff7f0e"}


def method_color(method: str) -> str:
    """The colour of a calibration method, the same on every page ('percentile:99.9' -> percentile's)."""
    return METHOD_COLORS.get(method.split(":")[0], "#17becf")


def histogram_figure(edges, counts, ranges: dict[str, dict], title: str, log_y: bool = False, max_bars: int = 256,
                     x_title: str = "value", y_title: str = "count", values_name: str = "values") -> go.Figure:
    """A tensor's calibration histogram with every method's clip range drawn in that method's colour.

    `edges`/`counts` come straight from the collected statistics; bins are merged (summed) to at
    most `max_bars` bars for drawing. `ranges` maps method -> {clip_min, clip_max}.
    """
    import numpy as np

    edges, counts = np.asarray(edges, dtype=float), np.asarray(counts, dtype=float)
    factor = max(1, int(np.ceil(len(counts) / max_bars)))
    if factor > 1:
        pad = (-len(counts)) % factor
        counts = np.concatenate([counts, np.zeros(pad)]).reshape(-1, factor).sum(1)
        edges = np.concatenate([edges[:-1:factor], [edges[-1] + pad * (edges[1] - edges[0])]])
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig = go.Figure(go.Bar(x=centers, y=counts, width=widths, marker_color="#8c9bb0", name=values_name,
                           hovertemplate="[%{x:.4g}] %{y:.0f}<extra></extra>"))
    top = counts.max() if len(counts) else 1
    for i, (method, r) in enumerate(ranges.items()):
        color = method_color(method)
        for j, x in enumerate((r["clip_min"], r["clip_max"])):
            fig.add_trace(go.Scatter(x=[x, x], y=[0, top * (1.05 + 0.04 * i)], mode="lines",
                                     line=dict(color=color, width=2, dash="solid" if j else "dot"),
                                     name=method, legendgroup=method, showlegend=j == 1,
                                     hovertemplate=f"{method}: {x:.4g}<extra></extra>"))
    fig.update_layout(title=title, bargap=0, height=380, margin=dict(l=10, r=10, t=50, b=40),
                      xaxis_title=x_title, yaxis_title=y_title, yaxis_type="log" if log_y else "linear",
                      legend=dict(orientation="h", y=-0.2))
    return fig


def channel_range_figure(mins: list[float], maxs: list[float], title: str, x_title: str = "output channel",
                         y_title: str = "weight value", names: tuple[str, str] = ("max", "min")) -> go.Figure:
    """Per-output-channel weight ranges: when they differ by orders of magnitude, per-tensor fails."""
    idx = list(range(len(mins)))
    fig = go.Figure()
    fig.add_trace(go.Bar(x=idx, y=maxs, name=names[0], marker_color="#1f77b4"))
    fig.add_trace(go.Bar(x=idx, y=mins, name=names[1], marker_color="#aec7e8"))
    fig.update_layout(title=title, barmode="overlay", height=320, xaxis_title=x_title,
                      yaxis_title=y_title, margin=dict(l=10, r=10, t=50, b=40))
    return fig


def overview_figure(ranges: dict[str, dict[str, dict]], sqnr: dict[str, dict[str, float]], layers: list[str],
                    titles: tuple[str, str] = ("clip range per layer",
                                               "output SQNR per layer (dB, higher is better)")) -> go.Figure:
    """All layers at once: each method's clip range (top) and the SQNR it gives at each layer (bottom)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=titles)
    for method, per_layer in ranges.items():
        color = method_color(method)
        lo = [per_layer[n]["clip_min"] if n in per_layer else None for n in layers]
        hi = [per_layer[n]["clip_max"] if n in per_layer else None for n in layers]
        fig.add_trace(go.Scatter(x=layers, y=hi, mode="markers+lines", name=method, legendgroup=method,
                                 line=dict(color=color)), row=1, col=1)
        fig.add_trace(go.Scatter(x=layers, y=lo, mode="markers", name=method, legendgroup=method, showlegend=False,
                                 marker=dict(color=color, symbol="triangle-down")), row=1, col=1)
        s = sqnr.get(method, {})
        fig.add_trace(go.Scatter(x=layers, y=[s.get(n) for n in layers], mode="markers+lines", name=method,
                                 legendgroup=method, showlegend=False, line=dict(color=color)), row=2, col=1)
    fig.update_layout(height=620, margin=dict(l=10, r=10, t=40, b=120), clickmode="event+select")
    fig.update_xaxes(tickangle=-60)
    return fig


def accuracy_figure(rows: list[dict], fp32_accuracy: float, y_title: str = "top-1 %") -> go.Figure:
    """End-to-end top-1 per method and activation bit width, with the FP32 accuracy as a line."""
    fig = go.Figure()
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [r for r in rows if r["method"] == method]
        fig.add_trace(go.Bar(x=[f"A{r['act_bits']}" for r in pts], y=[r["accuracy"] * 100 for r in pts], name=method,
                             marker_color=method_color(method),
                             text=[f"{r['accuracy']:.1%}" for r in pts], textposition="outside"))
    fig.add_hline(y=fp32_accuracy * 100, line_dash="dash", annotation_text=f"FP32 {fp32_accuracy:.2%}")
    fig.update_layout(barmode="group", yaxis_title=y_title, height=380, margin=dict(l=10, r=10, t=30, b=40))
    return fig


def qat_accuracy_figure(epochs: list, title: str = "Accuracy per epoch (epoch 0 = PTQ, before fine-tuning)",
                        x_title: str = "epoch", y_title: str = "top-1",
                        names: tuple[str, str] = ("fake-quant (simulation)", "real INT8 (ONNX Runtime)")) -> go.Figure:
    """Fake-quant and real INT8 accuracy after each QAT epoch (epoch 0 = PTQ; rows are
    qcore.train.qat.QATEpochRow), against FP32 and PTQ lines."""
    fig = go.Figure()
    x = [r.epoch for r in epochs]
    fig.add_trace(go.Scatter(x=x, y=[r.fake_quant_accuracy for r in epochs], mode="lines+markers",
                             name=names[0], line_color="#d62728"))
    int8 = [r for r in epochs if r.int8_accuracy is not None]
    if int8:
        fig.add_trace(go.Scatter(x=[r.epoch for r in int8], y=[r.int8_accuracy for r in int8],
                                 mode="lines+markers", name=names[1], line_color=PATH_COLORS["int8"],
                                 customdata=[r.int8_latency_ms for r in int8],
                                 hovertemplate=x_title + " %{x}: %{y:.2%}, %{customdata:.3f} ms (batch 1)<extra></extra>"))
    if epochs:
        fig.add_hline(y=epochs[0].fp32_accuracy, line_dash="dash", line_color=PATH_COLORS["fp32"],
                      annotation_text="FP32", annotation_position="bottom right")
        fig.add_hline(y=epochs[0].ptq_accuracy, line_dash="dot", line_color="#ff7f0e",
                      annotation_text="PTQ", annotation_position="top right")
    fig.update_layout(title=title, xaxis_title=x_title,
                      yaxis_title=y_title, yaxis_tickformat=".1%", xaxis=dict(dtick=1), height=380,
                      margin=dict(l=10, r=10, t=50, b=40), legend=dict(orientation="h", y=-0.2))
    return fig


def qat_curve_figure(steps: list, key: str, title: str, log_y: bool = False, x_title: str = "step") -> go.Figure:
    """One per-step quantity of a QAT run (`key`: "loss" or "lr" of each qcore.train.qat.QATStepRow) against
    the step."""
    fig = go.Figure(go.Scatter(x=[r.step for r in steps], y=[getattr(r, key) for r in steps], mode="lines",
                               line_color="#9467bd" if key == "lr" else "#1f77b4", name=key))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_type="log" if log_y else "linear", height=300,
                      margin=dict(l=10, r=10, t=50, b=40))
    return fig


def runs_compare_figure(rows: list[dict], metrics: list[str], title: str = "Runs compared") -> go.Figure:
    """Stored runs side by side: one group of bars per metric, one bar per run."""
    fig = go.Figure()
    for row in rows:
        label = f"#{row['id']} {row['kind']} {row['model']}"
        fig.add_trace(go.Bar(name=label, x=metrics, y=[row.get(m) for m in metrics],
                             hovertemplate=label + "<br>%{x}: %{y:.4g}<extra></extra>"))
    fig.update_layout(barmode="group", title=title, height=420, margin=dict(l=10, r=10, t=50, b=40),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def comparable_metrics(rows: list[dict]) -> tuple[list[str], list[str]]:
    """The numeric columns of flattened runs that `runs_compare_figure` can chart (ids, seeds and
    sizes excluded), and the ones charted by default: up to 6 accuracies, else the first 4."""
    import pandas as pd

    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns
               if c not in ("id", "seed", "eval_size") and pd.api.types.is_numeric_dtype(table[c])]
    return numeric, [m for m in numeric if "accuracy" in m][:6] or numeric[:4]


def weight_histogram_figure(values, log_y: bool = False, bins: int = 120, title: str = "weight distribution",
                            x_title: str = "value", y_title: str = "count") -> go.Figure:
    """The distribution of a layer's weight values (no clip ranges: weights are not calibrated)."""
    import numpy as np

    counts, edges = np.histogram(values, bins=bins)
    return histogram_figure(edges, counts, {}, title, log_y, x_title=x_title, y_title=y_title, values_name=y_title)


def sensitivity_figure(layers: list, fp32_accuracy: float, base_accuracy: float,
                       names: tuple[str, str, str] = ("only this layer quantized", "all but this layer quantized",
                                                     "output SQNR (dB)"),
                       y_title: str = "top-1 %", y2_title: str = "SQNR dB") -> go.Figure:
    """Per layer: top-1 with only this layer quantized and with all but this one (bars), and the
    layer's own output SQNR (line, right axis); FP32 as a dashed line. The y axis starts just
    below the worst accuracy so small drops stay visible."""
    layer_names = [r.name for r in layers]
    only = [r.only_this_quantized * 100 for r in layers]
    but = [r.all_but_this * 100 for r in layers]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=layer_names, y=only, name=names[0], marker_color="#d62728"))
    fig.add_trace(go.Bar(x=layer_names, y=but, name=names[1], marker_color="#1f77b4"))
    fig.add_trace(go.Scatter(x=layer_names, y=[r.sqnr_db for r in layers], name=names[2], yaxis="y2",
                             mode="lines+markers", line=dict(color="#2ca02c")))
    fig.add_hline(y=fp32_accuracy * 100, line_dash="dash", annotation_text="FP32")
    low = min(*only, *but, base_accuracy * 100)
    fig.update_layout(barmode="group", height=440, yaxis=dict(title=y_title, range=[max(0, low - 2), 100]),
                      yaxis2=dict(title=y2_title, overlaying="y", side="right"), xaxis=dict(tickangle=-60),
                      legend=dict(orientation="h", y=1.12), margin=dict(l=10, r=10, t=40, b=120))
    return fig


def pareto_figure(curve: list, fp32_accuracy: float, yours=None, x_title: str = "measured INT8 latency, batch 1 (ms)",
                  y_title: str = "top-1 %", names: tuple[str, str] = ("greedy curve", "your config")) -> go.Figure:
    """Top-1 against measured INT8 latency along the greedy float-fallback curve (each point
    labelled with its number of float layers), with the user's measured config as a star."""
    fig = go.Figure(go.Scatter(x=[pt.latency_ms for pt in curve], y=[pt.accuracy * 100 for pt in curve],
                               mode="lines+markers+text", text=[len(pt.float_layers) for pt in curve],
                               textposition="top center", name=names[0]))
    if yours is not None:
        fig.add_trace(go.Scatter(x=[yours.latency_ms], y=[yours.accuracy * 100], mode="markers",
                                 name=names[1], marker=dict(size=14, symbol="star", color="#d62728")))
    fig.add_hline(y=fp32_accuracy * 100, line_dash="dash", annotation_text="FP32")
    fig.update_layout(height=400, xaxis_title=x_title, yaxis_title=y_title,
                      margin=dict(l=10, r=10, t=20, b=40))
    return fig


def staircase_figure(x, y) -> go.Figure:
    """Quantize-then-dequantize against the identity: the staircase rounding makes of a line."""
    fig = go.Figure([go.Scatter(x=x, y=x, name="identity", line=dict(dash="dot", color="#999")),
                     go.Scatter(x=x, y=y, name="quantize -> dequantize", line=dict(color="#1f77b4"))])
    fig.update_layout(height=340, xaxis_title="x", yaxis_title="x̂", margin=dict(l=10, r=10, t=20, b=40))
    return fig


def clipping_figure(sweep: dict, layer: str) -> go.Figure:
    """Clipping, rounding and total expected error against the clip max (log scale), with a
    dashed line where the total is least: the trade-off the `mse` method optimizes."""
    fig = go.Figure([go.Scatter(x=sweep["clip_max"], y=sweep[k], name=k) for k in ("clipping", "rounding", "total")])
    best = min(range(len(sweep["total"])), key=sweep["total"].__getitem__)
    fig.add_vline(x=sweep["clip_max"][best], line_dash="dash", annotation_text="least total error")
    fig.update_layout(height=340, xaxis_title=f"clip max for {layer}", yaxis_title="expected squared error",
                      yaxis_type="log", margin=dict(l=10, r=10, t=20, b=40))
    return fig


def ste_figure(ste: dict) -> go.Figure:
    """Fake quantization's forward staircase and the straight-through gradient used in training
    (1 inside the clip range, 0 outside; right axis)."""
    fig = go.Figure([go.Scatter(x=ste["x"], y=ste["forward"], name="forward: x̂(x)"),
                     go.Scatter(x=ste["x"], y=ste["gradient"], name="backward: dx̂/dx used in training", yaxis="y2")])
    fig.update_layout(height=340, yaxis=dict(title="x̂"),
                      yaxis2=dict(title="gradient", overlaying="y", side="right", range=[-0.1, 1.2]),
                      margin=dict(l=10, r=10, t=20, b=40))
    return fig


def recovery_accuracy_figure(rows: list, fp32_accuracy: float, y_title: str = "top-1 %",
                             plain: str = "plain PTQ") -> go.Figure:
    """Top-1 of plain PTQ and of each combination of recovery steps, with FP32 as a line."""
    labels = ["+".join(r.steps) or plain for r in rows]
    fig = go.Figure(go.Bar(x=labels, y=[r.accuracy * 100 for r in rows], text=[f"{r.accuracy:.2%}" for r in rows],
                           textposition="outside", marker_color=["#7f7f7f"] + ["#2ca02c"] * (len(rows) - 1)))
    fig.add_hline(y=fp32_accuracy * 100, line_dash="dash", annotation_text=f"FP32 {fp32_accuracy:.2%}")
    low = min(r.accuracy for r in rows) * 100
    fig.update_layout(yaxis_title=y_title, yaxis_range=[max(0, low - 5), 100], height=360,
                      margin=dict(l=10, r=10, t=30, b=40))
    return fig


def recovery_sqnr_figure(rows: list, y_title: str = "output SQNR (dB)", plain: str = "plain PTQ") -> go.Figure:
    """Each layer's end-to-end output SQNR under plain PTQ and after each combination of steps."""
    fig = go.Figure()
    for r in rows:
        names = list(r.layer_sqnr_db)
        fig.add_trace(go.Scatter(x=names, y=[r.layer_sqnr_db[n] for n in names], mode="lines+markers",
                                 name="+".join(r.steps) or plain))
    fig.update_layout(yaxis_title=y_title, height=380, margin=dict(l=10, r=10, t=30, b=120))
    fig.update_xaxes(tickangle=-60)
    return fig


def before_after_ranges_figure(before: dict, after: dict, title: str, x_title: str = "output channel",
                               y_title: str = "weight range", names: tuple[str, str] = ("before", "after")) -> go.Figure:
    """One layer's per-output-channel weight range (max - min) before and after the steps."""
    fig = go.Figure()
    for label, d, color in ((names[0], before, "#d62728"), (names[1], after, "#2ca02c")):
        fig.add_trace(go.Bar(x=list(range(len(d["max"]))), y=[hi - lo for lo, hi in zip(d["min"], d["max"])],
                             name=label, marker_color=color, opacity=0.7))
    fig.update_layout(title=title, barmode="overlay", xaxis_title=x_title, yaxis_title=y_title,
                      height=320, margin=dict(l=10, r=10, t=50, b=40))
    return fig


def channel_max_figure(before: list[float], after: list[float], title: str, x_title: str = "input channel",
                       y_title: str = "max |activation|", names: tuple[str, str] = ("before", "after")) -> go.Figure:
    """Per-channel activation maxima before and after SmoothQuant's migration."""
    fig = go.Figure()
    fig.add_trace(go.Bar(x=list(range(len(before))), y=before, name=names[0], marker_color="#d62728", opacity=0.7))
    fig.add_trace(go.Bar(x=list(range(len(after))), y=after, name=names[1], marker_color="#2ca02c", opacity=0.7))
    fig.update_layout(title=title, barmode="overlay", xaxis_title=x_title, yaxis_title=y_title,
                      height=320, margin=dict(l=10, r=10, t=50, b=40))
    return fig


# --- Learn page: 4-bit level sets and weight-range spread (appended; data in, figure out) -------------------

def lowbit_levels_figure(levels: dict[str, tuple], x_title: str = "level (block scaled to [-1, 1])") -> go.Figure:
    """Each 4-bit format's levels on one axis, one row per format: where NF4 crowds its levels near zero."""
    fig = go.Figure()
    for i, (name, values) in enumerate(levels.items()):
        fig.add_trace(go.Scatter(x=list(values), y=[name] * len(values), mode="markers", name=name,
                                 marker=dict(size=10, symbol="line-ns-open", line=dict(width=2)),
                                 hovertemplate="%{x:.4f}<extra>" + name + "</extra>"))
    fig.update_layout(xaxis_title=x_title, showlegend=False, height=90 + 45 * len(levels),
                      margin=dict(l=10, r=10, t=20, b=40))
    return fig


def spread_figure(rows: list[dict], y_title: str = "max / min of per-channel |w| max",
                  names: tuple[str, str] = ("depthwise", "other")) -> go.Figure:
    """Per layer, the ratio of its widest to its narrowest output channel (log scale), depthwise layers apart."""
    fig = go.Figure()
    for label, dw, color in ((names[0], True, "#d62728"), (names[1], False, "#1f77b4")):
        sel = [r for r in rows if r["depthwise"] == dw]
        if sel:
            fig.add_trace(go.Bar(x=[r["layer"] for r in sel], y=[r["spread"] for r in sel], name=label, marker_color=color))
    fig.update_layout(yaxis_title=y_title, yaxis_type="log", height=340, margin=dict(l=10, r=10, t=20, b=110))
    fig.update_xaxes(tickangle=-60, categoryorder="array", categoryarray=[r["layer"] for r in rows])
    return fig


__all__ += ["lowbit_levels_figure", "spread_figure"]


GRAPH_SYMBOLS = {"input": "triangle-down", "conv": "square", "linear": "diamond", "quant": "circle", "add": "cross",
                 "concat": "x", "pool": "triangle-up", "act": "circle-open", "norm": "star", "mul": "x",
                 "output": "triangle-up", "block": "hexagon"}
GRAPH_SCALES = {"high": "RdYlGn", "low": "RdYlGn_r", None: "Viridis"}


def _graph_traces(graph, layout, values: dict, hover: dict, coloraxis: str) -> list:
    """The edges (one line trace) and the nodes of a model graph, coloured by `values` through `coloraxis`;
    nodes without a value are grey. Each node point carries its id as customdata (what a click selects)."""
    ex, ey = [], []
    for e in graph.edges:
        (x0, y0), (x1, y1) = (layout.x[e.source], layout.y[e.source]), (layout.x[e.target], layout.y[e.target])
        if abs(y0 - y1) > 1 and abs(x0 - x1) < 0.5:  # a skip edge would hide behind its column: route it on the
            side = -0.2 - 0.06 * min(abs(y0 - y1), 8)  # left (labels are on the right), longer ones further out
            ex += [x0, x0 + side, x1 + side, x1, None]
            ey += [y0, y0 - 0.5, y1 + 0.5, y1, None]
        else:
            ex += [x0, x1, None]
            ey += [y0, y1, None]
    traces = [go.Scatter(x=ex, y=ey, mode="lines", line=dict(color="#b8bec8", width=1), hoverinfo="skip",
                         showlegend=False)]
    for valued in (True, False):
        nodes = [n for n in graph.nodes if (values.get(n.id) is not None) == valued]
        marker = dict(symbol=[GRAPH_SYMBOLS.get(n.kind, "circle") for n in nodes], line=dict(width=1, color="#333"),
                      size=[18 if n.kind == "block" else 12 for n in nodes])
        marker.update(color=[values[n.id] for n in nodes], coloraxis=coloraxis) if valued else marker.update(color="#d0d0d0")
        traces.append(go.Scatter(x=[layout.x[n.id] for n in nodes], y=[layout.y[n.id] for n in nodes],
                                 mode="markers+text", text=[n.label for n in nodes], textposition="middle right",
                                 textfont=dict(size=10), customdata=[n.id for n in nodes], marker=marker,
                                 hovertext=[hover[n.id] for n in nodes], hoverinfo="text", showlegend=False))
    return traces


def graph_figure(graph, layout, values: dict, hover: dict, colorbar_title: str, good: str | None = None,
                 title: str = "") -> go.Figure:
    """A model's data-flow graph, top to bottom, nodes coloured by one metric (`values`: node id -> number or
    None) with a colour bar; `hover`: node id -> the text its hover shows; `good`: "high", "low" or None. For a
    metric with a good end the colours span the middle 90% of the values (the hover has every exact number)."""
    import numpy as np

    fig = go.Figure(_graph_traces(graph, layout, values, hover, "coloraxis"))
    finite = np.array([v for v in values.values() if v is not None and np.isfinite(v)])
    span = {}
    if good is not None and len(finite) >= 10:  # one outlier (the input's quantizer) must not wash out the rest
        span = dict(cmin=float(np.percentile(finite, 5)), cmax=float(np.percentile(finite, 95)))
    fig.update_layout(coloraxis=dict(colorscale=GRAPH_SCALES[good], colorbar=dict(title=colorbar_title), **span))
    return _graph_frame(fig, layout, title)


def graph_compare_figure(graph, layout, pairs: dict, hover: dict, colorbar_title: str,
                         titles: tuple[str, str] = ("float", "quantized")) -> go.Figure:
    """The same graph twice, side by side, coloured on one scale: by each node's value in the float model (left)
    and in the quantized one (right); `pairs`: node id -> (float value, quantized value)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=titles, horizontal_spacing=0.04)
    for col in (1, 2):
        values = {k: v[col - 1] for k, v in pairs.items()}
        for trace in _graph_traces(graph, layout, values, hover, "coloraxis"):
            fig.add_trace(trace, row=1, col=col)
    fig.update_layout(coloraxis=dict(colorscale=GRAPH_SCALES[None], colorbar=dict(title=colorbar_title)))
    return _graph_frame(fig, layout, "")


def _graph_frame(fig: go.Figure, layout, title: str) -> go.Figure:
    """Axes hidden, height by the number of rows (zoom and pan for the rest), nodes clickable."""
    fig.update_xaxes(visible=False, range=[min(layout.x.values()) - 1.0, max(layout.x.values()) + 2.0])
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, height=max(420, min(2400, 34 * layout.rows + 80)), clickmode="event+select",
                      margin=dict(l=10, r=10, t=50 if title else 30, b=10), plot_bgcolor="white", hovermode="closest")
    return fig


__all__ += ["GRAPH_SYMBOLS", "graph_figure", "graph_compare_figure"]
