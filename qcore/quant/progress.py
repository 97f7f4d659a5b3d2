"""The one progress-callback signature of the engine: `progress(fraction, message)`.

`fraction` is in [0, 1], or None when only the message changed. It is the signature of
`qcore.run.jobs.Job.update`, so a page hands `job.update` straight to any engine function, and a
callback may raise (a cancelled job does) to stop the work at its next report.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["Msg", "Progress", "silent", "span"]

Progress = Callable[[float | None, str], None]


class Msg(str):
    """A progress message a page can show in its user's language: as a str it is the English text (what logs,
    the CLI and old callers see); `template` is its catalog msgid and `values` fill it in, a value that is a
    Msg itself being translated too (qcore.i18n.translate_text). tests/test_i18n.py extracts Msg("...") as
    engine msgids, so every template needs a Korean translation."""

    template: str
    values: dict

    def __new__(cls, template: str, **values):
        text = super().__new__(cls, template.format(**values) if values else template)
        text.template, text.values = template, values
        return text

    def __reduce__(self):  # pickles (Ray, spawned QAT ranks) as template and values, not as the English text
        return _msg, (self.template, self.values)


def _msg(template: str, values: dict) -> Msg:
    return Msg(template, **values)


def silent(fraction: float | None, message: str) -> None:
    """The default: report nothing."""


def span(progress: Progress | None, start: float, end: float) -> Progress:
    """`progress` for a sub-task that owns [start, end] of the whole: its 0..1 map into that span."""
    progress = progress or silent

    def report(fraction: float | None, message: str) -> None:
        progress(None if fraction is None else start + (end - start) * fraction, message)

    return report
