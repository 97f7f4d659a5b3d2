"""Korean and English: every string the app passes through t() has a Korean translation, and the
catalog holds no string the app no longer uses (Babel extracts them, as `pybabel extract -k t` would)."""

from pathlib import Path

from babel.messages.extract import extract_from_file

from qcore.i18n import LANGUAGES, catalog, pick_language, translate

ROOT = Path(__file__).resolve().parents[1]


def used_msgids() -> set[str]:
    files = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]
    return {m[1] for f in files for m in extract_from_file("python", str(f), keywords={"t": None})}


def test_every_ui_string_has_a_korean_translation_and_none_is_stale():
    used, korean = used_msgids(), catalog("ko")
    assert len(used) >= 30  # page titles, navigation and the sidebar at least
    assert sorted(used - set(korean)) == []  # missing in Korean
    assert sorted(set(korean) - used) == []  # stale entries
    assert all(any("\uac00" <= ch <= "\ud7a3" for ch in korean[m]) for m in used), "every entry is Hangul"


def test_english_is_the_source_and_korean_uses_the_standard_terms():
    assert translate("Sensitivity", "en") == "Sensitivity" and catalog("en") == {}
    assert translate("Sensitivity", "ko") == "민감도 분석"
    assert translate("Quantization", "ko") == "양자화" and "보정" in translate("Calibration", "ko")
    assert translate("not in the catalog", "ko") == "not in the catalog"  # falls back to English


def test_language_choice_order():
    assert LANGUAGES == ("en", "ko")
    assert pick_language("ko", "en", "en-US") == "ko"  # ?lang= wins
    assert pick_language(None, "en", "ko-KR") == "en"  # then the session's toggle
    assert pick_language(None, None, "ko-KR") == "ko"  # then the browser
    assert pick_language("fr", None, None) == "en"
