"""The command line's language: gettext's `_` for the CLI's texts, chosen before the parser is built, and
argparse's own texts in that language."""

from __future__ import annotations

import argparse
import os
from contextlib import contextmanager

from qcore.console import ConsoleProgress
from qcore.i18n import LANGUAGES, cli_language, translate_text, translator

__all__ = ["_", "set_language", "argparse_in_language", "console_progress"]

_translate = translator("en")
_language = "en"


def _(msgid: str) -> str:
    """The CLI's text in the language main() chose (gettext's `_`; the msgids are the English text)."""
    return _translate(msgid)


def set_language(argv: list[str]) -> None:
    """Choose the language before the parser is built, so its help texts are translated too."""
    global _translate, _language
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--lang", choices=LANGUAGES, default=None)
    known, _rest = pre.parse_known_args([a for a in argv if a != "-h" and a != "--help"])
    _language = cli_language(known.lang, os.environ)
    _translate = translator(_language)


def console_progress(keep_stages: bool = False) -> ConsoleProgress:
    """The progress printer, showing the engine's messages (qcore.quant.progress.Msg) in the CLI's language."""
    return ConsoleProgress(keep_stages=keep_stages, translate=lambda message: translate_text(message, _language))


@contextmanager
def argparse_in_language():
    """argparse's own texts (usage, options, its errors) in the chosen language while the parser is built and
    reads the arguments: argparse looks its module-global `_` up at call time. Restored afterwards."""
    texts = {"usage: ": _("usage: "), "positional arguments": _("positional arguments"), "options": _("options"),
             "show this help message and exit": _("show this help message and exit"),
             "%(prog)s: error: %(message)s\n": _("%(prog)s: error: %(message)s\n"),
             "the following arguments are required: %s": _("the following arguments are required: %s"),
             "invalid choice: %(value)r (choose from %(choices)s)": _("invalid choice: %(value)r (choose from %(choices)s)"),
             "argument %(argument_name)s: %(message)s": _("argument %(argument_name)s: %(message)s"),
             "unrecognized arguments: %s": _("unrecognized arguments: %s")}
    own = argparse._
    argparse._ = lambda msgid: texts.get(msgid) or own(msgid)
    try:
        yield
    finally:
        argparse._ = own
