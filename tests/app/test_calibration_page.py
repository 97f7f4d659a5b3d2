"""AppTest of the calibration page with a finished calibration study in session state."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from qcore.run.jobs import Job
from tests.helpers import tiny_fashion_model

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture(scope="module")
def finished_study():
    from qcore.analysis.experiments import calibration_study

    study = calibration_study(tiny_fashion_model(), calib_size=64, eval_size=100)
    job = Job("calibration", lambda j: study).start()
    job.wait()
    return job


def test_calibration_page_draws_histograms_tables_and_accuracy(finished_study):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["calibration_job"] = finished_study
    at.switch_page("views/calibration.py").run()
    assert not at.exception and not at.error
    layer_box = at.selectbox(key="calib_layer")
    assert layer_box.options[0].startswith("input")
    tables = at.dataframe
    assert len(at.table) == 1 and len(tables) == 1  # accuracy per method x bits (text), the per-layer method table
    assert list(at.table[0].value.index) == ["entropy", "max", "mse", "percentile:99.99"]
    methods = list(tables[0].value["method"])
    assert methods == ["max", "percentile:99.99", "entropy", "mse"]
    layer_box.set_value("0").run()  # the conv layer: its weights section appears
    assert not at.exception
    assert any("Weights of this layer" in h.value for h in at.subheader)
    assert tables[0].value["clip max"].max() > 0


def test_calibration_page_before_a_run():
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("views/calibration.py").run()
    assert not at.exception
    assert any("Run calibration" in i.value for i in at.info)


def test_calibration_results_in_korean(finished_study):
    """The same finished study in Korean: headings, the method table's columns and the chart axes translated."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["calibration_job"] = finished_study
    at.session_state["lang_choice"] = "ko"  # the page may run without app.py here (see navigation.routed)
    at.switch_page("views/calibration.py").run()
    assert not at.exception and not at.error
    assert "방법" in at.dataframe[0].value.columns and "클리핑 최댓값" in at.dataframe[0].value.columns
    assert any("레이어" in h.value for h in at.subheader)
    at.selectbox(key="calib_layer").set_value("0").run()
    assert not at.exception
    assert any(h.value == "이 레이어의 가중치 (BN 폴딩 후)" for h in at.subheader)


def test_a_method_refused_at_a_width_is_said_on_the_page():
    """Entropy at 2-bit activations is refused (mse runs instead): the page says so beside the accuracy table."""
    from qcore.analysis.experiments import calibration_study

    study = calibration_study(tiny_fashion_model(), methods=["max", "entropy"], act_bits=(8, 2), calib_size=32,
                              eval_size=20)
    assert [(r.method, r.act_bits) for r in study[0].accuracy if r.note] == [("entropy", 2)]
    job = Job("calibration", lambda j: study).start()
    job.wait()
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["calibration_job"] = job
    at.switch_page("views/calibration.py").run()
    assert not at.exception and not at.error
    assert any(i.value.startswith("entropy at 2-bit activations: entropy needs at least 3-bit") for i in at.info)
