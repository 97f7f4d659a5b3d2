"""`python -m qcore diagnose`: which layers cause the drop, why, and which config change fixes it (measured)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from qcore.cli.language import _, console_progress
from qcore.cli.options import model_arg, quant_config
from qcore.cli.output import layers_line, pad, pct, remember_run, write_report

__all__ = ["cmd_diagnose", "evidence_text"]

MAX_ROWS = 20


def _number(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.4g}"


def evidence_text(cause, limit: int = 3) -> str:
    """The first `limit` measured numbers of a cause, in the CLI's language."""
    return "; ".join(f"{_(e.name)} {_number(e.value)}" for e in cause.evidence[:limit])


def _split_lines(r) -> None:
    print(_("{model} ({n} images): FP32 {fp32}, quantized {both}, weights only {w}, activations only {a}").format(
        model=r.identity.model, n=r.eval_size, fp32=pct(r.fp32_accuracy), both=pct(r.accuracy), w=pct(r.weights_only_accuracy),
        a=pct(r.acts_only_accuracy)))
    if r.weight_share is not None:
        print(_("share of the drop from the weights: {share}").format(share=pct(r.weight_share)))
    print(layers_line(r))


def _table(causes) -> None:
    if not causes:
        print(_("no cause found: every quantized layer measures a healthy SQNR or no detector fires"))
        return
    print(pad("#", 4) + pad(_("layer"), 26) + pad(_("cause"), 32) + pad(_("layer SQNR dB"), -14) + "  " + _("fix"))
    for i, c in enumerate(causes[:MAX_ROWS], 1):
        sqnr = "-" if c.layer_sqnr_db is None else f"{c.layer_sqnr_db:.1f}"
        print(pad(str(i), 4) + pad(c.layer, 26) + pad(_(c.title), 32) + pad(sqnr, -14) + "  " + c.fix.describe())
        print("    " + evidence_text(c))
    if len(causes) > MAX_ROWS:
        print(_("... and {n} more in the JSON report").format(n=len(causes) - MAX_ROWS))


def cmd_diagnose(args) -> int:
    from qcore.analysis.diagnosis import apply_fix, diagnose

    progress = console_progress()
    d = diagnose(model_arg(args), quant_config(args), args.data, args.calib_size, args.eval_size, args.seed,
                 progress=progress)
    progress.end()
    r = d.report
    _split_lines(r)
    _table(r.causes)
    write_report(args.out, r)
    remember_run(r)
    if args.apply_best and r.causes:
        result = apply_fix(d, 0, progress=progress)
        progress.end()
        print(_("applied {fix}: top-1 {before} -> {after} ({delta} points)").format(
            fix=result.cause.fix.describe(), before=pct(result.before), after=pct(result.after),
            delta=f"{result.delta * 100:+.2f}"))
        fixed = Path(args.out).with_suffix(".fix.json")
        fixed.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(_("wrote {path}").format(path=fixed))
    return 0
