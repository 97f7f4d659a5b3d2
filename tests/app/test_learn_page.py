from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _learn() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/learn.py").run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    return at


def test_learn_page_computes_from_the_model():
    at = _learn()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["levels"] == "8" and metrics["integer range"] == "[0, 7]"  # 3-bit asymmetric default
    tables = at.dataframe
    sym = tables[0].value.set_index("scheme")
    assert sym.loc["asymmetric", "levels used"] > sym.loc["symmetric", "levels used"]  # a ReLU output
    gran = tables[1].value.set_index("granularity")
    assert gran.loc["per-channel", "SQNR (dB)"] >= gran.loc["per-tensor", "SQNR (dB)"]
    headers = [h.value for h in at.header]
    for topic in ("7. Dynamic vs static PTQ", "8. Four-bit formats: INT4, NF4, FP4", "10. FP16 overflow vs BF16",
                  "11. Why MobileNet suffers under per-tensor weights", "Questions answered by experiments"):
        assert topic in headers
    # fm_resnet: live numbers of the new topics, and honest "does not apply" marks
    formats = next(d.value for d in tables if "format" in d.value.columns and "worst layer" in d.value.columns)
    assert set(formats["format"]) == {"INT4 per-channel", "INT4 per-group", "NF4", "FP4 E2M1"}
    assert (formats["SQNR, all weights (dB)"] > 10).all()
    infos = " ".join(i.value for i in at.info)
    assert "no LayerNorm -> Linear pair" in infos and "no depthwise convolution" in infos
    at.number_input(key="learn_hi").set_value(0.5).run()  # max below min: a message, not a traceback
    at.number_input(key="learn_lo").set_value(1.0).run()
    assert not at.exception and "larger than range min" in at.error[0].value


@pytest.mark.slow
def test_learn_page_in_korean_with_the_new_sections():
    from tests.app.navigation import routed

    at = routed("pages/learn.py", "ko")
    assert not at.exception and not at.error
    headers = [h.value for h in at.header]
    assert "실험으로 답하는 질문" in headers
    assert any("FP16" in h and "BF16" in h for h in headers)
    tables = at.dataframe
    assert any("형식" in d.value.columns for d in tables) and any("방식" in d.value.columns for d in tables)
    assert any("해당되지 않" in i.value for i in at.info)  # SmoothQuant: no LayerNorm -> Linear


@pytest.mark.slow
def test_learn_page_on_mobilenet_and_vit_shows_the_topics_that_apply():
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["model"] = "fm_mobilenetv2"
    at.switch_page("pages/learn.py").run()
    assert not at.exception
    assert any(m.label == "median spread, depthwise" and m.value != "–" for m in at.metric)
    at.session_state["model"] = "fm_vit"
    at.run()
    assert not at.exception
    assert any(b.label == "Run SmoothQuant and measure A8 accuracy" for b in at.button)
