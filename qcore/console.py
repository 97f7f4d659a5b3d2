"""Progress on the command line: one line rewritten in place on a terminal, one line per stage elsewhere.

The engine reports `progress(fraction, message)` many times a second (every batch, every timing round).
On a terminal a carriage return rewrites one status line, which is what a person watching wants. In a
file or a pipe (CI logs, `2> log.txt`, `| tee`) every carriage return is kept, so the same updates
become hundreds of lines of noise; there the printer writes a line only when the *stage* changes: the
message with its counters and numbers taken out ("statistics pass: 32/256 images" and
"statistics pass: 64/256 images" are one stage). A stage can be long: most of mobilenet_v2's 53 bias-correction
layers at 224x224 are one stage ("bias correction features.#.conv.# (#)"), which printed nothing for six minutes.
So the first update that comes HEARTBEAT_S seconds or more after the last line is printed too: a long stage shows
where it is about every HEARTBEAT_S seconds (a single update that itself takes longer still prints only when it comes).
"""

from __future__ import annotations

import re
import sys
import time
from typing import Callable, TextIO

__all__ = ["ConsoleProgress", "stage_of"]

WIDTH = 70
HEARTBEAT_S = 30.0  # off a terminal: the longest a running stage goes without a line
_NUMBER = re.compile(r"\d+(?:[.,/]\d+)*%?")


def stage_of(message: str) -> str:
    """The stage a message belongs to: the message with every number and n/N counter replaced by '#'."""
    return _NUMBER.sub("#", message)


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class ConsoleProgress:
    """A `Progress` callback that prints to `stream` (default: stderr).

    keep_stages: on a terminal, end the status line when the stage changes, so each stage's last
    message stays on screen (deploy's log); False rewrites one line throughout (a sweep over layers).
    Off a terminal each stage is one line either way. Call `end()` before printing results.
    translate: shows each message in the user's language (the CLI's; stages are told apart in that text).
    """

    def __init__(self, stream: TextIO | None = None, keep_stages: bool = False, tty: bool | None = None,
                 translate: Callable[[str], str] | None = None, clock: Callable[[], float] = time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self._printed_at = clock()
        self.translate = translate
        self.tty = _is_tty(self.stream) if tty is None else tty
        self.keep_stages = keep_stages
        self._stage: str | None = None
        self._open = False  # a status line without its newline is on screen

    def __call__(self, fraction: float | None, message: str) -> None:
        message = self.translate(message) if self.translate else message
        stage = stage_of(message)
        changed = stage != self._stage
        self._stage = stage
        if not self.tty:
            if changed or self.clock() - self._printed_at >= HEARTBEAT_S:
                print(message, file=self.stream, flush=True)
                self._printed_at = self.clock()
            return
        if changed and self.keep_stages:
            self.end()
        print(f"\r{message[:WIDTH]:{WIDTH}}", end="", file=self.stream, flush=True)
        self._open = True

    def line(self, text: str) -> None:
        """A line of its own (an epoch's result) between progress updates."""
        self.end()
        print(text, file=self.stream, flush=True)

    def end(self) -> None:
        """Finish the status line (terminal only), so what follows starts on a fresh line."""
        if self._open:
            print(file=self.stream, flush=True)
            self._open = False
