import threading
import time

import pytest

from qcore.jobs import Job


def test_job_reports_progress_and_result():
    gate = threading.Event()

    def work(job):
        job.update(0.5, "half way")
        gate.wait(5)
        return 42

    job = Job("t", work).start()
    deadline = time.time() + 5
    while job.snapshot()["message"] != "half way" and time.time() < deadline:
        time.sleep(0.01)
    snap = job.snapshot()
    assert snap["status"] == "running" and snap["progress"] == 0.5
    gate.set()
    final = job.wait(5)
    assert final["status"] == "done" and final["result"] == 42 and final["log"][0][1] == "half way"


def test_cancel_takes_effect_at_the_next_update():
    def work(job):
        while True:
            job.update(message="working")
            time.sleep(0.01)

    job = Job("t", work).start()
    time.sleep(0.05)
    start = time.time()
    job.cancel()
    assert job.wait(2)["status"] == "cancelled"
    assert time.time() - start < 2


@pytest.mark.parametrize("exc,expected", [(ValueError("bad bits"), "bad bits"), (KeyError("x"), "KeyError")])
def test_errors_become_messages(exc, expected):
    def work(job):
        raise exc

    snap = Job("t", work, user_errors=(ValueError,)).start().wait(5)
    assert snap["status"] == "failed" and expected in snap["error"]
