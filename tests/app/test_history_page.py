"""AppTest of the History page over a real history file."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from qcore.store import history
from tests.helpers import DEPLOY, STUDY

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("views/history.py").run()
    assert not at.exception
    return at


def test_empty_history_says_where_runs_come_from(private_history):
    at = _page()
    assert at.info and "No runs stored yet" in at.info[0].value


def test_runs_are_listed_filtered_and_exportable(private_history):
    history.record(DEPLOY)
    history.record(STUDY)
    at = _page()
    table = at.dataframe[0].value
    assert sorted(table["model"]) == ["fm_gelunet", "fm_resnet"]
    assert "int8_accuracy" in table.columns and "accuracy max A8" in table.columns
    assert [b.label for b in at.get("download_button")] == ["Export listed as CSV", "Export listed as JSON"]
    at.text_input[0].set_value("gelu").run()
    assert list(at.dataframe[0].value["model"]) == ["fm_gelunet"]
    at.multiselect[0].set_value(["deploy"]).run()
    assert at.info and "match the filters" in at.info[0].value


def test_jobs_cut_off_by_a_restart_and_cancelled_jobs_are_shown(private_history):
    """A job left running by a server process that is gone shows as interrupted (marked when the page opens),
    next to a cancelled and a finished one; the finished run itself stays in the runs table."""
    from qcore.run.job_log import JobLog, server_id

    log = JobLog()
    gone = server_id(pid=1).rsplit(":", 1)[0] + ":not-this-process"  # pid 1 with another start time: a dead server
    log.submitted("a", "calibration", "fm_resnet", server=gone)
    log.started("a")
    log.submitted("b", "deploy", "fm_resnet")
    log.ended("b", "cancelled")
    log.submitted("c", "calibration", "fm_gelunet")
    log.started("c")
    log.ended("c", "done")
    history.record(STUDY)
    at = _page()
    jobs = at.expander[0]
    assert "interrupted 1" in jobs.label and "cancelled 1" in jobs.label
    table = at.dataframe[0].value  # the jobs table comes first
    assert sorted(table["status"]) == ["cancelled", "done", "interrupted"]
    assert "server stopped" in table.set_index("status").loc["interrupted", "reason"]
    assert len(at.dataframe) == 2 and list(at.dataframe[1].value["model"]) == ["fm_gelunet"]


def test_an_unreachable_ray_cluster_is_a_message_not_a_traceback(monkeypatch):
    """QX_EXECUTOR naming a cluster nobody answers for: every page says so in one message."""
    from views._jobs import scheduler

    monkeypatch.setenv("QX_EXECUTOR", "ray://127.0.0.1:9")  # the discard port: nothing listens
    scheduler.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=60)
        at.switch_page("views/history.py").run()
        assert not at.exception
        assert at.error and "cannot reach the Ray cluster" in at.error[0].value
    finally:
        scheduler.clear()  # the next test's app makes the local queue again
