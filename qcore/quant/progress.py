"""The one progress-callback signature of the engine: `progress(fraction, message)`.

`fraction` is in [0, 1], or None when only the message changed. It is the signature of
`qcore.run.jobs.Job.update`, so a page hands `job.update` straight to any engine function, and a
callback may raise (a cancelled job does) to stop the work at its next report.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["Progress", "silent", "span"]

Progress = Callable[[float | None, str], None]


def silent(fraction: float | None, message: str) -> None:
    """The default: report nothing."""


def span(progress: Progress | None, start: float, end: float) -> Progress:
    """`progress` for a sub-task that owns [start, end] of the whole: its 0..1 map into that span."""
    progress = progress or silent

    def report(fraction: float | None, message: str) -> None:
        progress(None if fraction is None else start + (end - start) * fraction, message)

    return report
