"""AppTest of the what-if editor on the Calibration page: open it, edit a layer, Reset, Keep (the kept edit reaches
the sidebar's config), and the same in Korean."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from qcore.run.jobs import Job

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LAYER = "layers.5.conv2"  # late in fm_resnet: its suffix is short, so every edit is quick


@pytest.fixture(scope="module")
def finished_study():
    from qcore.analysis.experiments import calibration_study

    study = calibration_study("fm_resnet", methods=["max"], act_bits=(8,), calib_size=64, eval_size=100)
    job = Job("calibration", lambda j: study).start()
    job.wait()
    return job


def _page(job, lang="en"):
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["calibration_job"] = job
    at.session_state["calib_size"] = 64
    at.session_state["calib_layer"] = LAYER
    at.query_params["lang"] = lang
    at.switch_page("views/calibration.py").run()
    assert not at.exception and not at.error
    return at


def _metric(at, label):
    return next(m for m in at.metric if m.label == label)


@pytest.mark.slow
def test_edit_reset_and_keep(finished_study):
    at = _page(finished_study)
    at.button(key="whatif_open").click().run()
    assert not at.exception and not at.error
    base_acc = _metric(at, "Accuracy").value
    assert _metric(at, "Layer output SQNR").value.endswith(" dB")
    assert at.button(key="wi_reset").disabled  # nothing edited yet

    at.select_slider(key="wi_abits").set_value(2).run()  # 2-bit activations: the SQNR must fall
    assert not at.exception
    assert _metric(at, "Layer output SQNR").delta.startswith("-")
    hi = at.number_input(key="wi_hi").value
    at.number_input(key="wi_hi").set_value(hi / 4).run()  # typed clip: the slider follows
    assert not at.exception
    assert at.slider(key="wi_slider").value[1] == pytest.approx(hi / 4)
    assert "(fixed)" in " ".join(c.value for c in at.caption)

    at.button(key="wi_reset").click().run()  # back to the current config
    assert at.select_slider(key="wi_abits").value == 8 and at.number_input(key="wi_hi").value == pytest.approx(hi)
    assert _metric(at, "Accuracy").value == base_acc and at.button(key="wi_reset").disabled

    at.toggle(key="wi_float").set_value(True).run()
    at.button(key="wi_keep").click().run()
    assert not at.exception
    assert at.session_state["layer_edits"] == {"model": "fm_resnet", "layers": {LAYER: {"enabled": False}}}
    assert any(LAYER in c.value and "Layer edits kept" in c.value for c in at.sidebar.caption)
    session = at.session_state["whatif_session"][1]
    assert not session.config.for_layer(LAYER).enabled  # the session now measures from the kept config
    assert at.toggle(key="wi_float").value and at.button(key="wi_keep").disabled


@pytest.mark.slow
def test_the_editor_in_korean(finished_study):
    at = _page(finished_study, "ko")
    at.button(key="whatif_open").click().run()
    assert not at.exception and not at.error
    assert any(h.value == "가정 분석: 이 레이어 편집" for h in at.subheader)
    assert any(m.label == "정확도" for m in at.metric)
