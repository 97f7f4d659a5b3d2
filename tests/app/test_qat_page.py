"""AppTest of the QAT page: a finished real run, a running job with streamed metrics, a cancelled one."""

import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from qcore.run.jobs import Job
from qcore.train.qat import QATEpochRow, QATRecipe, QATStepRow
from tests.helpers import tiny_fashion_model

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    from qcore.train.qat import run_qat

    out = tmp_path_factory.mktemp("qat")
    recipe = QATRecipe(steps=4, minutes=None, epochs=2, batch_size=16, latency_iters=3, log_every=1)
    report = run_qat(tiny_fashion_model(), recipe=recipe, calib_size=32, eval_size=100, final_eval_size=100, out_dir=out)
    job = Job("qat", lambda j: report).start()
    job.wait()
    return job


def _page(job=None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if job is not None:
        at.session_state["qat_job"] = job
    at.switch_page("views/qat.py").run()
    assert not at.exception
    return at


@pytest.mark.slow
def test_finished_run_shows_comparison_charts_and_downloads(finished_job):
    at = _page(finished_job)
    labels = [m.label for m in at.metric]
    assert {"FP32 top-1", "PTQ top-1", "QAT top-1", "QAT real INT8 top-1", "Step cost vs FP32"} <= set(labels)
    table = at.dataframe[0].value
    assert list(table["model"]) == ["FP32", "PTQ", "QAT"]
    assert table["batch-1 ms (ONNX Runtime)"].notna().all()  # measured, not left blank
    assert len(at.get("plotly_chart")) == 3  # accuracy per epoch, loss, learning rate


def test_running_job_draws_the_metrics_streamed_so_far():
    release = threading.Event()
    rows = [QATEpochRow(epoch=0, step=0, fake_quant_accuracy=0.8, fp32_accuracy=0.9, ptq_accuracy=0.8),
            QATStepRow(step=1, loss=0.5, lr=1e-5), QATStepRow(step=2, loss=0.4, lr=5e-6)]

    def work(job):
        for row in rows:
            job.emit(row)
        job.update(0.5, "epoch 1/3, step 2/10")
        release.wait(30)

    job = Job("qat", work).start()
    try:
        while len(job.snapshot()["metrics"]) < 3:
            pass
        at = _page(job)
        assert len(at.get("plotly_chart")) == 3
        assert any("Cancel" in b.label for b in at.button)
    finally:
        release.set()
        job.wait(5)


def test_cancelled_run_keeps_its_curves():
    def work(job):
        job.emit(QATEpochRow(epoch=0, step=0, fake_quant_accuracy=0.8, fp32_accuracy=0.9, ptq_accuracy=0.8))
        job.cancel()
        job.update(0.1, "stopping")

    job = Job("qat", work).start()
    job.wait(5)
    at = _page(job)
    assert at.warning and "Cancelled" in at.warning[0].value
    assert len(at.get("plotly_chart")) == 1


def test_page_without_a_job_invites_a_run():
    at = _page()
    assert any("Start fine-tuning" in i.value for i in at.info)


def test_cancelled_run_says_so_in_korean():
    def work(job):
        job.cancel()
        job.update(0.1, "stopping")

    job = Job("qat", work).start()
    job.wait(5)
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["qat_job"] = job
    at.session_state["lang_choice"] = "ko"  # the page may run without app.py here (see navigation.routed)
    at.switch_page("views/qat.py").run()
    assert not at.exception
    assert at.warning and at.warning[0].value == "취소되었습니다."
    assert any(b.label == "미세 조정 시작" for b in at.button)


@pytest.mark.slow
def test_a_two_process_ddp_run_from_the_page_says_how_it_ran():
    import time

    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["calib_size"] = 64
    at.session_state["eval_size"] = 200
    at.switch_page("views/qat.py").run()
    at.radio(key="qat_budget").set_value("steps")
    at.number_input(key="qat_amount").set_value(4.0)
    at.number_input(key="qat_epochs").set_value(1)
    at.number_input(key="qat_monitor_size").set_value(200)
    at.number_input(key="qat_nproc").set_value(2)
    at.selectbox(key="qat_device").set_value("cpu")
    at.button[0].click().run()
    for _ in range(300):
        if at.session_state["qat_job"].done:
            break
        time.sleep(1)
    at.run()
    assert not at.exception and not at.error
    report = at.session_state["qat_job"].snapshot()["result"].report
    assert report.distributed["world"] == 2 and report.steps == 4
    assert any("Fine-tuned with DDP on 2 processes (gloo, cpu)." in c.value for c in at.caption)
