"""AppTest: the Recover accuracy page runs CLE + bias correction, or BRECQ, and draws what changed."""

import time

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.navigation import routed


def _run_the_form(at: AppTest, seconds: int = 120) -> None:
    at.button[0].click().run()  # the form's Run button
    for _ in range(seconds):
        if not at.session_state["recover_job"].done:
            time.sleep(1)
            continue
        at.run()
        break
    at.run()
    assert not at.exception and not at.error


@pytest.mark.slow
def test_recover_page_runs_steps_and_shows_per_layer_results():
    at = routed("views/recover.py", "en", eval_size=300, calib_size=128)
    assert not at.exception
    _run_the_form(at)
    frames = [df.value for df in at.dataframe]
    steps = list(frames[0]["steps"])
    assert steps == ["plain PTQ", "cle", "cle+bias_correction"]
    assert all(0.5 < v <= 1.0 for v in frames[0]["top-1"])


@pytest.mark.slow
def test_brecq_from_the_page_shows_each_blocks_error_before_and_after():
    at = routed("views/recover.py", "en", eval_size=200, calib_size=64, weight_bits=4)
    at.multiselect(key="recover_steps").set_value(["brecq"])
    at.number_input(key="recover_iters").set_value(20)
    at.toggle(key="recover_act_steps").set_value(True)
    _run_the_form(at, seconds=300)
    assert any("BRECQ, block by block" in h.value for h in at.subheader)
    blocks = next(df.value for df in at.dataframe if "BRECQ MSE" in df.value.columns)
    # 20 iterations leave a block's rounding unsettled (one block can end a little above nearest); all together fall
    assert len(blocks) >= 3 and blocks["BRECQ MSE"].sum() < blocks["nearest MSE"].sum()
    assert (blocks["BRECQ MSE"] < blocks["nearest MSE"]).sum() >= len(blocks) - 1
    assert blocks["steps learned"].max() >= 2  # a block kept its learned activation step sizes
    assert "layers.2.conv1, layers.2.conv2, layers.2.shortcut.0" in set(blocks["layers"])
