"""The session's language: chosen before anything draws (URL, session, browser locale), the sidebar's
toggle, and `t`, the pages' gettext."""

from __future__ import annotations

import streamlit as st

__all__ = ["init_language", "t", "engine_text", "language_toggle"]


def init_language() -> str:
    """The session's language before anything is drawn: ?lang=ko|en when the URL changed it, else the
    session's choice, else the browser's locale. The sidebar's toggle writes the choice back to the URL."""
    from qcore.i18n import pick_language

    query = st.query_params.get("lang")
    if query != st.session_state.get("_lang_synced"):  # the URL itself changed (a link, a typed ?lang=)
        st.session_state["lang_choice"] = pick_language(query, st.session_state.get("lang_choice"), None)
    st.session_state.setdefault("_lang_default", pick_language(None, None, getattr(st.context, "locale", None)))
    if "lang_choice" not in st.session_state:
        st.session_state["lang_choice"] = st.session_state["_lang_default"]
    return st.session_state["lang_choice"]


def t(msgid: str) -> str:
    """`msgid` (English) in the session's language, from the gettext catalog (qcore.i18n). Before app.py's
    init_language has run (a page run on its own, as AppTest's switch_page does after a first test), ?lang= decides."""
    from qcore.i18n import translate

    return translate(msgid, _session_language())


def engine_text(message: str) -> str:
    """An engine progress message (qcore.quant.progress.Msg, or plain English) in the session's language."""
    from qcore.i18n import translate_text

    return translate_text(message, _session_language())


def _session_language() -> str:
    from qcore.i18n import pick_language

    return st.session_state.get("lang_choice") or pick_language(st.query_params.get("lang"), None, None)


def language_toggle() -> None:
    from qcore.i18n import LANGUAGE_NAMES, LANGUAGES

    st.radio(t("Language"), list(LANGUAGES), key="lang_choice", persist_state="session", format_func=LANGUAGE_NAMES.get, horizontal=True,
             label_visibility="collapsed")
    choice = st.session_state["lang_choice"]
    if "lang" in st.query_params or choice != st.session_state["_lang_default"]:  # URLs stay clean by default
        st.query_params["lang"] = choice
    st.session_state["_lang_synced"] = st.query_params.get("lang")
