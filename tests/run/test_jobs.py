import threading
import time

import pytest

from qcore.run.jobs import Job


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


def test_reaper_cancels_jobs_of_owners_gone_longer_than_the_grace():
    import threading

    from qcore.run.jobs import Job, JobReaper

    alive = {"a": True, "b": True}
    reaper = JobReaper(lambda o: alive[o], grace=10, interval=3600)
    stop = threading.Event()

    def work(job):
        while not stop.wait(0.01):
            job.update(None)

    ja, jb = Job("a", work).start(), Job("b", work).start()
    reaper.track("a", ja)
    reaper.track("b", jb)
    try:
        alive["b"] = False
        assert reaper.sweep(now=100.0) == []  # gone, but within the grace period
        alive["b"] = True
        assert reaper.sweep(now=105.0) == []  # came back (a reconnect): the clock restarts
        alive["b"] = False
        assert reaper.sweep(now=106.0) == []
        assert reaper.sweep(now=116.5) == [jb]
        assert jb.wait(5)["status"] == "cancelled"
        assert ja.snapshot()["status"] == "running"
    finally:
        stop.set()
        ja.wait(5)
