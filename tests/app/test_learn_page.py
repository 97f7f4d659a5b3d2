from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def test_learn_page_computes_from_the_model():
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page("pages/learn.py").run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["levels"] == "8" and metrics["integer range"] == "[0, 7]"  # 3-bit asymmetric default
    tables = at.dataframe
    sym = tables[0].value.set_index("scheme")
    assert sym.loc["asymmetric", "levels used"] > sym.loc["symmetric", "levels used"]  # a ReLU output
    gran = tables[1].value.set_index("granularity")
    assert gran.loc["per-channel", "sqnr_db"] >= gran.loc["per-tensor", "sqnr_db"]
    at.number_input(key="learn_hi").set_value(0.5).run()  # max below min: a message, not a traceback
    at.number_input(key="learn_lo").set_value(1.0).run()
    assert not at.exception and "larger than range min" in at.error[0].value
