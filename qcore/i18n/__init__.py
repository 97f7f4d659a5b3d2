"""Korean and English UI text from gettext catalogs (Babel), for the app and the CLI.

English is the source language (gettext's msgids); Korean lives in the `.po` files of
`locales/ko/LC_MESSAGES/` (`messages.po` for the app's shared text, one file per larger page or the
CLI, merged: one msgid may appear in only one of them), read with Babel at first use (no compiled
.mo files to keep in sync). `tests/test_i18n.py` extracts the marked strings with Babel (`t("...")` in the app,
`_("...")` in the CLI, `N_("...")` in qcore) and fails when one has no Korean translation, when the catalog keeps one
nobody uses, or when a translation loses a placeholder.

The app picks its language with `pick_language` (URL, session, browser locale), the CLI with `cli_language`
(--lang, $QX_LANG, the POSIX locale). Errors raised deep in the engine stay English: they are for logs and tests
as much as for people, and the pages show them as they come.

Korean follows the terms Korean engineers use (양자화, 보정, 민감도 분석, 양자화 인식 훈련), with the
English term in parentheses where engineers expect it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping

__all__ = ["LANGUAGES", "LANGUAGE_NAMES", "N_", "catalog", "translate", "translate_text", "pick_language",
           "cli_language", "translator"]

LANGUAGES = ("en", "ko")
LANGUAGE_NAMES = {"en": "English", "ko": "한국어"}
LOCALES = Path(__file__).resolve().parent / "locales"


@lru_cache(maxsize=None)
def catalog(lang: str) -> dict[str, str]:
    """msgid -> translation for `lang` ({} for English, the source language)."""
    if lang == "en":
        return {}
    from babel.messages.pofile import read_po

    merged: dict[str, str] = {}
    for path in sorted((LOCALES / lang / "LC_MESSAGES").glob("*.po")):
        with open(path, "rb") as f:
            po = read_po(f, locale=lang)
        entries = {m.id: m.string for m in po if m.id and m.string and not m.fuzzy}
        twice = set(entries) & set(merged)
        if twice:
            raise ValueError(f"{path.name} repeats msgids of another catalog: {sorted(twice)[:3]}")
        merged.update(entries)
    return merged


def translate(msgid: str, lang: str) -> str:
    """The text in `lang`; the English text where the catalog has none."""
    return catalog(lang).get(msgid, msgid) if lang in LANGUAGES else msgid


def translate_text(message: str, lang: str) -> str:
    """An engine message in `lang`: a qcore.quant.progress.Msg through its template (values that are Msgs
    translated too, the others as they are), any other text through the catalog as a whole."""
    template = getattr(message, "template", None)
    if template is None:
        return translate(message, lang)
    values = {k: translate_text(v, lang) if hasattr(v, "template") else v for k, v in message.values.items()}
    try:
        return translate(template, lang).format(**values)
    except (KeyError, IndexError, ValueError):  # a translation that lost a placeholder: the English text
        return str(message)


def pick_language(query: str | None, chosen: str | None, browser_locale: str | None) -> str:
    """?lang=ko|en wins, then the session's choice, then the browser's locale (ko-KR -> ko), else English."""
    for candidate in (query, chosen, (browser_locale or "").split("-")[0].lower()):
        if candidate in LANGUAGES:
            return candidate
    return "en"


def cli_language(argv_lang: str | None, environ: Mapping[str, str]) -> str:
    """The command line's language: `--lang` wins, then $QX_LANG (ko|en), then the POSIX locale
    (the first set of LC_ALL, LC_MESSAGES, LANG, as gettext reads them: ko_KR.UTF-8 -> ko), else English.
    A terminal set to Korean gets Korean without any flag; QX_LANG=en or --lang en turns it off."""
    for candidate in (argv_lang, environ.get("QX_LANG")):
        if candidate in LANGUAGES:
            return candidate
    posix = next((environ[k] for k in ("LC_ALL", "LC_MESSAGES", "LANG") if environ.get(k)), "")
    return "ko" if posix == "ko" or posix.startswith("ko_") else "en"


def translator(lang: str) -> Callable[[str], str]:
    """A gettext-style `_` for `lang`: English msgid in, text in `lang` out."""
    return lambda msgid: translate(msgid, lang)


def N_(msgid: str) -> str:
    """gettext_noop: marks an English text for the catalog where it is defined (engine constants, tables)
    and returns it unchanged; whoever shows it translates it then (`t(...)` in the app). tests/test_i18n.py
    extracts N_("...") from every module under qcore/."""
    return msgid
