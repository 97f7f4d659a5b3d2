"""Every page of app.py's navigation, idle (no run started), in Korean and in English: no exception, the
page's own title in the chosen language, and the shared sidebar with it."""

import pytest

from qcore.i18n import translate
from tests.app.navigation import app_pages, routed


def _hangul(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in text)


def _open(script: str, lang: str):
    at = routed(script, lang, eval_size=50)
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("page", app_pages(), ids=lambda p: p.url_path or "model")
def test_every_page_in_korean_then_english(page, private_history):
    korean = _open(page.script, "ko")
    english = _open(page.script, "en")
    ko_title, en_title = korean.title[0].value, english.title[0].value
    assert _hangul(ko_title) and ko_title != en_title, ko_title
    assert not _hangul(en_title) and translate(en_title, "ko") == ko_title  # the catalog's title, not another text
    assert "모델과 데이터" in [h.value for h in korean.sidebar.header]
    assert "Model and data" in [h.value for h in english.sidebar.header]
    shown = " ".join(x.value for kind in ("info", "caption", "markdown") for x in getattr(english, kind))
    assert not _hangul(shown)  # English stays English: no Korean text leaks into the default language
