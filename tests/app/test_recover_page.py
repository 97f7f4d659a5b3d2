"""AppTest: the Recover accuracy page runs CLE + bias correction and draws what changed."""

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.mark.slow
def test_recover_page_runs_steps_and_shows_per_layer_results():
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["eval_size"] = 300
    at.session_state["calib_size"] = 128
    at.switch_page("views/recover.py").run()
    assert not at.exception
    at.button[0].click().run()  # the form's Run button
    for _ in range(120):
        if not at.session_state["recover_job"].done:
            time.sleep(1)
            continue
        at.run()
        break
    at.run()
    assert not at.exception and not at.error
    frames = [df.value for df in at.dataframe]
    steps = list(frames[0]["steps"])
    assert steps == ["plain PTQ", "cle", "cle+bias_correction"]
    assert all(0.5 < v <= 1.0 for v in frames[0]["top-1"])
