"""Korean and English: every string the app and the CLI mark for translation has a Korean translation, and
the catalog holds no string nobody uses any more (Babel extracts them, as `pybabel extract` would):
t("...") in app.py and views/, _("...") in the CLI (qcore/cli/), N_("...") anywhere under qcore/."""

import re
import string
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file

from qcore.i18n import LANGUAGES, N_, catalog, cli_language, pick_language, translate, translator

ROOT = Path(__file__).resolve().parents[1]
CLI = sorted((ROOT / "qcore" / "cli").glob("*.py"))


def _extract(files, keywords) -> set[str]:
    return {m[1] for f in files for m in extract_from_file("python", str(f), keywords=keywords)}


def app_msgids() -> set[str]:
    return _extract([ROOT / "app.py", *sorted((ROOT / "views").glob("*.py"))], {"t": None, "N_": None})


def cli_msgids() -> set[str]:
    return _extract(CLI, {"_": None})


def engine_msgids() -> set[str]:
    """N_("...") anywhere under qcore/, and tr("...") where an engine module renders text in the caller's
    language (the workflow report: `tr` is the translate function it is given)."""
    return _extract(sorted((ROOT / "qcore").rglob("*.py")), {"N_": None, "tr": None, "Msg": None})


def _hangul(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in text)


def test_every_ui_string_has_a_korean_translation_and_none_is_stale():
    app, cli, korean = app_msgids(), cli_msgids(), catalog("ko")
    assert len(app) >= 300 and len(cli) >= 80  # every page's texts, and the CLI's messages and help
    used = app | cli | engine_msgids()
    assert sorted(app - set(korean)) == []  # missing in Korean (the app)
    assert sorted(cli - set(korean)) == []  # missing in Korean (the CLI)
    assert sorted(engine_msgids() - set(korean)) == []  # missing in Korean (engine texts: progress, reports)
    assert sorted(set(korean) - used) == []  # stale entries
    assert [m for m in used & set(korean) if not _hangul(korean[m])] == [], "every entry is Hangul"


def _fields(text: str) -> list[str]:
    """The str.format fields a text fills in."""
    return sorted(name for _, name, _, _ in string.Formatter().parse(text) if name is not None)


def _percent(text: str) -> list[str]:
    """%-placeholders (argparse's texts and help, where a lone % must be written %%)."""
    return sorted(re.findall(r"%(?:\(\w+\))?[a-z%]", text))


def test_translations_keep_every_placeholder():
    """A Korean text that drops or renames a {field} would raise KeyError in Korean only, where no English test
    looks; argparse's %-texts likewise (Korean's "%p" for percentage points is fine where no % is formatted)."""
    ko = catalog("ko")
    wrong = {m: s for m, s in ko.items() if _fields(m) != _fields(s) or (_percent(m) and _percent(m) != _percent(s))}
    assert wrong == {}


def test_a_signed_delta_comes_first_in_every_language():
    """st.metric colours a delta by its first character: "FP32 대비 -1.2%p" showed an accuracy drop as a green
    up-arrow. Every text that starts with a {delta} keeps it first in Korean."""
    ko = catalog("ko")
    deltas = {m: s for m, s in ko.items() if m.startswith("{delta}")}
    assert len(deltas) >= 3 and [s for s in deltas.values() if not s.startswith("{delta}")] == []


def test_every_korean_catalog_keeps_one_term_per_concept():
    """qcore/i18n/glossary.json: where the English says a concept, the Korean uses its one term (where the
    glossary requires it) and none of the variants it replaces ("활성화" for an activation tensor, "학습" for
    training, "세분도" for granularity, ...)."""
    import json

    glossary = json.loads((ROOT / "qcore" / "i18n" / "glossary.json").read_text())["concepts"]
    ko = catalog("ko")
    assert {c["ko"] for c in glossary} >= {"양자화", "보정", "민감도", "양자화 인식 훈련", "클리핑", "스케일", "영점"}
    wrong = []
    for concept in glossary:
        for msgid, text in ko.items():
            if not re.search(concept["en"], msgid, re.I):
                continue
            rest = text
            for phrase in concept["except"]:
                rest = rest.replace(phrase, "")
            if [v for v in concept["avoid"] if v in rest] or (concept["required"] and concept["ko"] not in text):
                wrong.append((concept["concept"], msgid[:60], text[:60]))
    assert wrong == []


def test_korean_bold_closes_where_markdown_sees_it():
    """Markdown closes ** only after a letter, or before a space or punctuation: "**채널별 (per-channel)**와"
    shows its asterisks, because ")" precedes them and a Hangul particle follows. A {field} may end in ")"."""
    closing_after_punctuation = re.compile(r"[)\]}.,:;!?'\"`]\*\*[^\s)\].,:;!?]")
    assert [s for s in catalog("ko").values() if closing_after_punctuation.search(s)] == []


def test_english_is_the_source_and_korean_uses_the_standard_terms():
    assert translate("Sensitivity", "en") == "Sensitivity" and catalog("en") == {}
    assert translate("Sensitivity", "ko") == "민감도 분석"
    assert translate("Quantization", "ko") == "양자화" and "보정" in translate("Calibration", "ko")
    assert translate("per-channel", "ko") == "채널별 (per-channel)"
    assert translate("not in the catalog", "ko") == "not in the catalog"  # falls back to English
    assert N_("Cancel") == "Cancel" and translator("ko")("Cancel") == "취소" and translator("en")("Cancel") == "Cancel"


def test_language_choice_order():
    assert LANGUAGES == ("en", "ko")
    assert pick_language("ko", "en", "en-US") == "ko"  # ?lang= wins
    assert pick_language(None, "en", "ko-KR") == "en"  # then the session's toggle
    assert pick_language(None, None, "ko-KR") == "ko"  # then the browser
    assert pick_language("fr", None, None) == "en"


@pytest.mark.parametrize("flag, environ, lang", [
    (None, {}, "en"),
    ("ko", {}, "ko"),
    ("en", {"QX_LANG": "ko", "LANG": "ko_KR.UTF-8"}, "en"),  # --lang wins
    (None, {"QX_LANG": "ko"}, "ko"),
    (None, {"QX_LANG": "en", "LANG": "ko_KR.UTF-8"}, "en"),  # QX_LANG before the locale
    (None, {"LANG": "ko_KR.UTF-8"}, "ko"),
    (None, {"LC_ALL": "ko_KR.UTF-8", "LANG": "en_US.UTF-8"}, "ko"),  # LC_ALL before LANG, as POSIX has it
    (None, {"LC_ALL": "C.UTF-8", "LANG": "ko_KR.UTF-8"}, "en"),
    (None, {"LANG": "kok_IN"}, "en"),  # Konkani is not Korean
    (None, {"QX_LANG": "fr"}, "en"),
])
def test_cli_language_choice(flag, environ, lang):
    assert cli_language(flag, environ) == lang


def test_an_engine_message_is_its_english_text_and_translates_with_its_values():
    import pickle

    from qcore.i18n import translate_text
    from qcore.quant.progress import Msg

    inner = Msg("{done}/{total} images", done=3, total=10)
    msg = Msg("evaluating {what}: {detail}", what="FP32", detail=inner)
    assert msg == "evaluating FP32: 3/10 images"  # what logs, the CLI and plain callers see
    assert translate_text(msg, "ko") == "FP32 평가 중: 이미지 3/10장"  # nested messages translate too
    assert translate_text(msg, "en") == msg
    back = pickle.loads(pickle.dumps(msg))  # through Ray and spawned processes
    assert back == msg and translate_text(back, "ko") == translate_text(msg, "ko")
    assert translate_text("a text nobody marked", "ko") == "a text nobody marked"


def test_every_progress_message_of_real_runs_reaches_a_korean_page_in_korean(tmp_path):
    """Calibration and QAT, run for real: each message they report is a Msg whose Korean text is Hangul (an
    engine message left as a plain f-string would show in English on a Korean page)."""
    from qcore.analysis.experiments import compare_methods
    from qcore.i18n import translate_text
    from qcore.quant.qconfig import QuantConfig
    from qcore.train.qat import QATRecipe, run_qat
    from tests.helpers import tiny_fashion_model

    seen = []
    say = lambda f, m: seen.append(m)  # noqa: E731
    compare_methods(tiny_fashion_model(), methods=["max", "mse"], calib_size=16, eval_size=20, progress=say)
    run_qat(tiny_fashion_model(), QuantConfig(), QATRecipe(steps=2, minutes=None, epochs=1, batch_size=16,
                                                           int8_each_epoch=False),
            calib_size=16, eval_size=20, final_eval_size=20, out_dir=tmp_path, progress=say)
    assert len(seen) > 10
    plain = sorted({m for m in seen if not hasattr(m, "template")})
    assert plain == [], "engine progress messages that cannot be translated"
    assert [m for m in seen if not _hangul(translate_text(m, "ko"))] == []
