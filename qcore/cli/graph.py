"""The graph command: the model's data-flow graph, nodes coloured by one measured metric, as a standalone HTML
page (plotly inline: it opens offline) and optionally JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from qcore.cli.language import _, console_progress
from qcore.cli.options import model_arg, quant_config
from qcore.cli.output import CliError

__all__ = ["GRAPH_METRICS", "cmd_graph"]

GRAPH_METRICS = ("sqnr", "clip_error", "rounding_error", "range", "bits", "quantized", "sensitivity")


def _metric_title(metric: str) -> str:
    return {"sqnr": _("output SQNR (dB)"), "clip_error": _("clipping error"), "rounding_error": _("rounding error"),
            "range": _("output range (max - min)"), "bits": _("bits"), "quantized": _("quantized (1) or float (0)"),
            "sensitivity": _("top-1, only this layer quantized")}[metric]


def _sensitivity(args):
    from qcore.analysis.graph_metrics import sensitivity_rows

    if not args.sensitivity:
        if args.metric == "sensitivity":
            raise CliError(_("--metric sensitivity needs --sensitivity FILE (written by python -m qcore sensitivity --out)"))
        return None, None
    report = json.loads(Path(args.sensitivity).read_text())
    return sensitivity_rows(report), f"{args.sensitivity} ({report.get('model')}, {report.get('eval_size')} images)"


def _html(graph, view, metric: str) -> str:
    """The page: the graph coloured by `metric`, then float and quantized side by side (by range, or by bits)."""
    from qcore.analysis.graph_layout import METRICS, compare_values, hover_text, layout, metric_value
    from qcore.figures import graph_compare_figure, graph_figure

    places = layout(view)
    names = {"sqnr": _("output SQNR"), "float_range": _("float output range"), "quant_range": _("quantized output range"),
             "clip": _("clip range"), "clip_error": _("clipping error"), "rounding_error": _("rounding error"),
             "precision": _("precision"), "quantized": _("quantized"), "sensitivity": _("top-1, only this layer quantized"),
             "members": _("nodes inside")}
    hover = {n.id: hover_text(n, names) for n in view.nodes}
    title = _("{model}: {metric} ({n} calibration images; SQNR and ranges on {probe})").format(
        model=graph.model, metric=_metric_title(metric), n=graph.calib_images, probe=graph.probe_images)
    main = graph_figure(view, places, {n.id: metric_value(n, metric) for n in view.nodes}, hover,
                        _metric_title(metric), METRICS[metric], title)
    compared = metric if metric in ("range", "bits") else "range"
    side = graph_compare_figure(view, places, {n.id: compare_values(n, compared) for n in view.nodes}, hover,
                                _metric_title(compared), (_("float model"), _("quantized model")))
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{graph.model}</title></head><body>"
            + main.to_html(full_html=False, include_plotlyjs=True)
            + side.to_html(full_html=False, include_plotlyjs=False) + "</body></html>\n")


def _worst(graph, metric: str, n: int = 5) -> list:
    """The `n` nodes at the bad end of `metric` (none for a metric without one)."""
    from qcore.analysis.graph_layout import METRICS, metric_value

    good = METRICS[metric]
    valued = [(v, node) for node in graph.nodes if (v := metric_value(node, metric)) is not None and math.isfinite(v)]
    return [] if good is None else sorted(valued, key=lambda vn: vn[0], reverse=good == "low")[:n]


def cmd_graph(args) -> int:
    from qcore.analysis.graph_layout import auto_collapse
    from qcore.analysis.graph_metrics import loaded_model_graph
    from qcore.zoo.inputs import load

    rows, source = _sensitivity(args)
    loaded = load(model_arg(args), args.weights)
    progress = console_progress()
    graph, _sim = loaded_model_graph(loaded, quant_config(args), args.data, args.calib_size, args.seed, rows, source,
                                     progress)
    progress.end()
    if rows is not None and graph.sensitivity_from is None:
        raise CliError(_("no layer of {file} is a layer of {model}").format(file=args.sensitivity, model=loaded.name))
    expand = tuple(b for b in (args.expand or "").split(",") if b)
    view, depth = auto_collapse(graph, args.max_nodes, expand) if args.max_nodes > 0 else (graph, None)
    print(_("{model}: {nodes} nodes, {edges} edges").format(model=graph.model, nodes=len(graph.nodes),
                                                            edges=len(graph.edges))
          + ("" if depth is None else "; " + _("blocks collapsed at module depth {depth}: {n} nodes drawn").format(
              depth=depth, n=len(view.nodes))))
    worst = _worst(graph, args.metric)
    if worst:
        print(_("the worst nodes by {metric}:").format(metric=_metric_title(args.metric)))
    for value, node in worst:
        print(f"  {node.label:40} {value:.4g}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(_html(graph, view, args.metric), encoding="utf-8")
    print(_("wrote {path}").format(path=args.out))
    if args.json:
        Path(args.json).write_text(graph.to_json())
        print(_("wrote {path}").format(path=args.json))
    return 0
