"""Plotly figure builders: pure functions, data in, go.Figure out (no streamlit here).

Colours are fixed per path kind so a path looks the same on every page.
"""

from __future__ import annotations

import plotly.graph_objects as go

__all__ = ["PATH_COLORS", "latency_figure", "speedup_figure"]

PATH_COLORS = {"fp32": "#7f7f7f", "int8": "#1f77b4", "dynamic": "#ff7f0e", "bf16": "#2ca02c", "fp16": "#9467bd"}


def latency_figure(latency: dict[str, dict], kinds: dict[str, str], title: str) -> go.Figure:
    """Median latency per path with p10-p90 whiskers; `latency` maps path -> {median_ms, p10_ms, p90_ms}."""
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
    fig.update_layout(title=title, xaxis_title="milliseconds (median, whiskers p10-p90)", yaxis=dict(autorange="reversed"),
                      height=80 + 38 * len(names), margin=dict(l=10, r=30, t=50, b=40))
    return fig


def speedup_figure(speedups: dict[str, float], kinds: dict[str, str], baseline: str) -> go.Figure:
    """Speedup of each path against the fastest FP32 path (1.0 = as fast)."""
    names = sorted(speedups, key=speedups.get, reverse=True)
    fig = go.Figure(go.Bar(
        x=names, y=[speedups[n] for n in names],
        marker_color=[PATH_COLORS.get(kinds.get(n, "int8"), "#444") for n in names],
        text=[f"{speedups[n]:.2f}x" for n in names], textposition="outside",
    ))
    fig.add_hline(y=1.0, line_dash="dash", annotation_text=f"fastest FP32 ({baseline})")
    fig.update_layout(yaxis_title="speedup vs fastest FP32", height=360, margin=dict(l=10, r=10, t=30, b=40))
    return fig
