"""AppTest: the Workflow page runs the default model from the PTQ baseline to real INT8 and offers the report."""

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _finish(at: AppTest, key: str, seconds: int = 600) -> None:
    for _ in range(seconds):
        if at.session_state[key].done:
            break
        time.sleep(1)
    at.run()


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "ko"])
def test_workflow_page_reaches_real_int8_with_a_downloadable_report(lang):
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["lang"] = lang
    at.session_state["calib_size"] = 128
    at.switch_page("views/workflow.py").run()
    assert not at.exception
    at.number_input(key="wf_eval_size").set_value(300)
    at.button[0].click().run()  # the form's submit button
    _finish(at, "workflow_job")
    assert not at.exception and not at.error
    report = at.session_state["workflow_job"].snapshot()["result"]
    assert report.steps[0].ran and report.final is not None and report.final.accuracy is not None
    summary = at.dataframe[0].value
    assert len(summary) == 5  # four steps and the real INT8 model
    if report.met_by == "ptq":
        assert not report.step("recover").ran and not report.step("partial").ran and not report.step("qat").ran
    headline = (at.success or at.warning)[0].value
    if lang == "ko":
        assert "목표" in headline and "단계" in summary.columns[0]
    else:
        assert "target" in headline and summary.columns[0] == "Step"
    labels = [b.label for b in at.get("download_button")]
    assert len(labels) == 2 and any("Markdown" in x for x in labels) and any("HTML" in x for x in labels)
