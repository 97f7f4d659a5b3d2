"""AppTest of the sensitivity page with a finished sweep of a tiny model in session state."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from qcore.run.jobs import Job
from tests.helpers import tiny_fashion_model

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture(scope="module")
def finished_sweep():
    from qcore.analysis.partial import sweep_layers

    result = sweep_layers(tiny_fashion_model(), calib_size=32, eval_size=64)
    job = Job("sensitivity", lambda j: result).start()
    job.wait()
    return job


def open_page(job) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["sensitivity_job"] = job
    at.switch_page("views/sensitivity.py").run()
    return at


def test_sweep_results_chart_table_and_grid(finished_sweep):
    at = open_page(finished_sweep)
    assert not at.exception and not at.error
    labels = {m.label for m in at.metric}
    assert {"FP32 top-1", "All layers quantized", "Layers"} <= labels
    assert len(at.dataframe) >= 1


@pytest.mark.slow
def test_re_measure_gives_accuracy_and_real_latency(finished_sweep):
    at = open_page(finished_sweep)
    next(b for b in at.button if b.label.startswith("Re-measure")).click().run()
    job = at.session_state["measure_job"]
    snap = job.wait(120)
    assert snap["status"] == "done", snap["error"]
    at.run()
    labels = {m.label: m.value for m in at.metric}
    assert labels["INT8 latency (ONNX Runtime, batch 1)"].endswith("ms")
    assert labels["Speedup vs FP32 ONNX Runtime"].endswith("x")


def test_sweep_results_in_korean(finished_sweep):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["sensitivity_job"] = finished_sweep
    at.session_state["lang_choice"] = "ko"  # the page may run without app.py here (see navigation.routed)
    at.switch_page("views/sensitivity.py").run()
    assert not at.exception and not at.error
    labels = {m.label for m in at.metric}
    assert {"FP32 top-1 정확도", "모든 레이어 양자화", "레이어 수"} <= labels
    assert "이 레이어만 양자화" in at.dataframe[0].value.columns


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_an_accuracy_drop_shows_a_red_down_arrow_in_both_languages(finished_sweep, lang):
    """Streamlit colours a metric's delta by its leading sign: a drop must start with "-" in every language (the
    Korean text once put "FP32 대비" first, and a drop showed as a green up-arrow)."""
    from dataclasses import replace

    swept = finished_sweep.snapshot()["result"]
    dropped = swept._replace(report=replace(swept.report, base_accuracy=swept.report.fp32_accuracy - 0.0512))
    job = Job("sensitivity", lambda j: dropped).start()
    job.wait()
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["sensitivity_job"] = job
    at.session_state["lang_choice"] = lang
    at.switch_page("views/sensitivity.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    deltas = [m.delta for m in at.metric if m.delta]
    assert len(deltas) == 1 and deltas[0].startswith("-5.12"), deltas


def _run_sweep(at: AppTest, seconds: int = 300) -> None:
    import time

    at.button[0].click().run()  # the form's submit button
    for _ in range(seconds):
        job = at.session_state["sensitivity_job"] if "sensitivity_job" in at.session_state else None
        if job is None or job.done:
            break
        time.sleep(1)
    at.run()


@pytest.mark.slow
def test_the_sweep_runs_on_ray_from_the_page_and_says_so():
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["calib_size"] = 64
    at.switch_page("views/sensitivity.py").run()
    at.number_input(key="sens_eval_size").set_value(200)
    at.radio(key="sens_executor").set_value("ray")
    at.number_input(key="sens_ray_workers").set_value(2)
    try:
        _run_sweep(at)
    finally:
        import ray

        ray.shutdown()  # the page started a Ray instance in this process; the rest of the suite needs none
    assert not at.exception and not at.error
    report = at.session_state["sensitivity_job"].snapshot()["result"].report
    assert report.executor["engine"] == "ray" and report.executor["workers"] == 2
    assert any("Ran on Ray with 2 worker(s)." in c.value for c in at.caption)


def test_an_unreachable_ray_address_is_a_message_not_a_traceback():
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("views/sensitivity.py").run()
    at.radio(key="sens_executor").set_value("ray")
    at.text_input(key="sens_ray_address").set_value("ray://127.0.0.1:9")
    at.button[0].click().run()
    assert not at.exception and "cannot reach the Ray cluster at 127.0.0.1:9" in at.error[0].value
