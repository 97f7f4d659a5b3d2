"""How the CLI shows results: one-line errors, table cells padded by terminal width, percentages, the
layers line, the report file and the history entry."""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

from qcore.cli.language import _

__all__ = ["CliError", "pad", "cell", "pct", "layers_line", "remember_run", "write_report"]


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


def pad(text: str, width: int) -> str:
    """`text` padded to `width` terminal cells (left-aligned; right-aligned for a negative width): Hangul
    takes two cells, so str.format's padding would misalign translated table headers."""
    cells = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    fill = " " * max(0, abs(width) - cells)
    return fill + text if width < 0 else text + fill


def cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return "" if v is None else str(v)[:15]


def pct(x) -> str:
    return _("n/a") if x is None else f"{x:.2%}"


def layers_line(report) -> str:
    """How many layers were quantized and which stay float (never a silent FP32 "INT8")."""
    floats = report.inventory.float_layers
    more = f": {', '.join(f.layer for f in floats[:6])}{' ...' if len(floats) > 6 else ''}" if floats else ""
    return _("{quantized} layers quantized, {floats} stay float").format(
        quantized=len(report.inventory.quantized_layers), floats=len(floats)) + more


def remember_run(report) -> None:
    from qcore.store.history import remember

    run_id = remember(report, say=lambda msg: print(_("warning: {message}").format(message=msg), file=sys.stderr))
    if run_id is not None:
        print(_("saved as run {id} in the history (python -m qcore history)").format(id=run_id))


def write_report(path, report, quiet: bool = False) -> None:
    """The report's JSON to `path` (folders made as needed)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(report.to_json())
    if not quiet:
        print(_("wrote {path}").format(path=path))
