"""The workflow's downloadable report, as Markdown or as a self-contained HTML page with the charts.

Both render one list of blocks (heading, paragraph, table, figure), so the two files always say the
same. Text goes through `tr` (the caller's translation: the app's or the CLI's language); the figures
come from the caller too (qcore.figures sits above this package).
"""

from __future__ import annotations

import html
from typing import Callable

from qcore.workflow.report import SKIP_REASONS, STEP_TITLES, StepOutcome, WorkflowReport
from qcore.workflow.target import Verdict

__all__ = ["title", "recipe_text", "recover_text", "recover_table", "blocks", "summary_rows", "skip_text", "to_markdown", "to_html"]

Translate = Callable[[str], str]


def title(step: str, tr: Translate) -> str:
    """A step's heading ("ptq", "recover", "partial", "qat", "final") in the reader's language."""
    return tr(STEP_TITLES[step])


def _pct(x) -> str:
    return "-" if x is None else f"{x:.2%}"


def _x(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _ms(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _mark(verdict: Verdict | None) -> str:
    return "-" if verdict is None else ("✓" if verdict.met else "✗")


def summary_rows(r: WorkflowReport, tr: Translate) -> list[list[str]]:
    """One row per step and one for the final INT8 model: accuracy, drop, latency, speedup, verdict."""
    rows = []
    for s in r.steps:
        if not s.ran:
            rows.append([title(s.step, tr), skip_text(s, tr), "-", "-", "-", "-"])
            continue
        rows.append([title(s.step, tr), _pct(s.accuracy), f"{(r.fp32_accuracy - s.accuracy) * 100:+.2f}",
                     _ms(s.int8_ms), _x(s.speedup), _mark(s.verdict)])
    f = r.final
    if f is not None:
        drop = "-" if f.accuracy is None else f"{(r.fp32_accuracy - f.accuracy) * 100:+.2f}"
        rows.append([title("final", tr) + f" ({f.int8_runtime})", _pct(f.accuracy), drop, _ms(f.latency_ms),
                     _x(f.speedup), _mark(f.verdict)])
    return rows


def skip_text(s: StepOutcome, tr: Translate) -> str:
    """Why a step did not run, in the reader's language."""
    params = dict(s.detail)
    if "by" in params:
        params["by"] = title(params["by"], tr)
    return tr("skipped") + ": " + tr(SKIP_REASONS[s.skipped]).format(**params)


def recipe_text(s: StepOutcome, tr: Translate) -> str:
    """Where step 4's schedule came from, in the reader's language."""
    return tr(s.detail.recipe_source).format(**s.detail.recipe_params)


def _headline(r: WorkflowReport, tr: Translate) -> str:
    if r.met_by:
        return tr("The target is met by step {step}.").format(step=title(r.met_by, tr))
    return tr("No step met the target: the table shows how close each came.")


def recover_text(s: StepOutcome, tr: Translate) -> str:
    """What step 2 kept, from which accuracy, in the reader's language."""
    d = s.detail
    if not d.kept:
        return tr("No recovery step raised the accuracy of step 1 ({before}); step 3 starts from step 1.").format(
            before=_pct(d.baseline_accuracy))
    return tr("Kept {steps}: {before} -> {after}.").format(steps=" + ".join(d.kept), before=_pct(d.baseline_accuracy),
                                                           after=_pct(s.accuracy))


def recover_table(s: StepOutcome, tr: Translate) -> tuple[list[str], list[list[str]]]:
    """Step 2's tries: headers and one row per combination, in the reader's language."""
    rows = [[" + ".join(x.steps), _pct(x.accuracy), _pct(x.agreement), tr("kept") if x.kept else "-",
             f"{x.seconds:.1f}"] for x in s.detail.tried]
    return [tr("steps"), tr("accuracy"), tr("agreement with FP32"), tr("kept"), tr("seconds")], rows


def _step_blocks(s: StepOutcome, tr: Translate) -> list[tuple]:
    """The table each step produced, in its own terms."""
    if s.step == "ptq" and s.ran:
        rows = [[m.method, _pct(m.accuracy), _pct(m.agreement)] for m in s.detail.methods]
        return [("h3", title("ptq", tr)), ("p", tr("Best calibration method: {m}.").format(m=s.detail.best_method)),
                ("table", [tr("method"), tr("accuracy"), tr("agreement with FP32")], rows)]
    if s.step == "recover" and s.ran:
        return [("h3", title("recover", tr)), ("p", recover_text(s, tr)), ("table", *recover_table(s, tr))]
    if s.step == "partial" and s.ran:
        rows = [[str(len(c.float_layers)), ", ".join(c.float_layers[-1:]) or "-", _pct(c.accuracy),
                 _ms(c.int8_ms), _x(c.speedup), _mark(c.verdict)] for c in s.detail.curve]
        return [("h3", title("partial", tr)),
                ("p", tr("Layers kept in float: {layers}.").format(layers=", ".join(s.float_layers) or tr("none"))),
                ("table", [tr("float layers"), tr("added"), tr("accuracy"), tr("INT8 ms"), tr("speedup"), tr("target")],
                 rows)]
    if s.step == "qat" and s.ran:
        d = s.detail
        rows = [[str(h.epoch), _pct(h.fake_quant_accuracy), _pct(h.int8_accuracy)] for h in d.history]
        return [("h3", title("qat", tr)),
                ("p", tr("Recipe: {steps} steps at batch {batch}, learning rate {lr:.2g} (cosine to zero): {why}.").format(
                    steps=d.recipe["steps"], batch=d.recipe["batch_size"], lr=d.recipe["lr"],
                    why=recipe_text(s, tr))),
                ("p", tr("PTQ {ptq} -> QAT {qat} (fake-quant), real INT8 after QAT {int8}.").format(
                    ptq=_pct(d.ptq_accuracy), qat=_pct(s.accuracy), int8=_pct(d.int8_accuracy))),
                ("table", [tr("epoch"), tr("fake-quant accuracy"), tr("real INT8 accuracy")], rows)]
    return []


def blocks(r: WorkflowReport, tr: Translate = str, figures: list[tuple[str, object]] = ()) -> list[tuple]:
    """The report's content: what was asked, what each step measured, which step met the target."""
    who = r.identity
    out = [("h1", tr("Quantization workflow report")),
           ("p", tr("Model {model} on {data} ({n} evaluation images, seed {seed}); CPU: {cpu}.").format(
               model=who.model, data=who.data, n=r.eval_size, seed=who.seed, cpu=who.isa.get("cpu_class", "?"))),
           ("p", tr("Target: {target}.").format(target=_target_text(r.target, tr))),
           ("p", _scheme_text(r.steps[0].config, tr)),
           ("p", "**" + _headline(r, tr) + "**"),
           ("table", [tr("Step"), tr("accuracy"), tr("drop vs FP32 (pt)"), tr("INT8 ms (batch 1)"), tr("speedup"),
                      tr("target")], [[tr("FP32"), _pct(r.fp32_accuracy), "0.00", "-", "1.00x", "-"]] + summary_rows(r, tr))]
    out += [("fig", title, fig) for title, fig in figures]
    for s in r.steps:
        out += _step_blocks(s, tr)
    if r.final is not None:
        f = r.final
        out += [("h3", title("final", tr)),
                ("p", tr("{int8} INT8 vs {fp32} FP32, batch 1: {ms} ms vs {fms} ms ({x}); accuracy {acc}.").format(
                    int8=f.int8_runtime, fp32=f.fp32_runtime, ms=_ms(f.latency_ms), fms=_ms(f.fp32_ms),
                    x=_x(f.speedup), acc=_pct(f.accuracy)))]
        out += [("p", tr("Files: {files}").format(files=", ".join(f.files)))] if f.files else []
        out += [("p", n) for n in f.notes]
    out += [("p", n) for n in r.notes]
    return out


def _scheme_text(config: dict, tr: Translate) -> str:
    d = config["default"]
    scales = tr("per-channel") if d["weight_granularity"] == "channel" else tr("per-tensor")
    return tr("Quantization: {w}-bit weights ({scales}, {range} range), {a}-bit activations.").format(
        w=d["weight_bits"], scales=scales, range=config["weight_range"], a=d["act_bits"])


def _target_text(target: dict, tr: Translate) -> str:
    parts = []
    if target.get("max_drop") is not None:
        parts.append(tr("accuracy within {pt:g} pt of FP32").format(pt=target["max_drop"] * 100))
    if target.get("min_speedup") is not None:
        parts.append(tr("INT8 at least {x:g}x faster than FP32").format(x=target["min_speedup"]))
    return tr(" and ").join(parts)


def to_markdown(r: WorkflowReport, tr: Translate = str) -> str:
    lines = []
    for b in blocks(r, tr):
        if b[0] in ("h1", "h3"):
            lines += [("# " if b[0] == "h1" else "### ") + b[1], ""]
        elif b[0] == "p":
            lines += [b[1], ""]
        elif b[0] == "table":
            lines += ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in b[2]] + [""]
    return "\n".join(lines)


def to_html(r: WorkflowReport, tr: Translate = str, figures: list[tuple[str, object]] = ()) -> str:
    """One self-contained page: plotly's script is embedded once (the report opens offline)."""
    parts, first = [], True
    for b in blocks(r, tr, figures):
        if b[0] in ("h1", "h3"):
            parts.append(f"<{b[0]}>{html.escape(b[1])}</{b[0]}>")
        elif b[0] == "p":
            text = html.escape(b[1])
            parts.append(f"<p><b>{text[2:-2]}</b></p>" if text.startswith("**") else f"<p>{text}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in b[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b[0] == "fig":
            parts.append(f"<h4>{html.escape(b[1])}</h4>" + b[2].to_html(full_html=False, include_plotlyjs=first))
            first = False
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(tr('Quantization workflow report'))}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")
