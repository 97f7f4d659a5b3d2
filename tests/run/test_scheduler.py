"""The job queue: slots from the cores, fair order, sharing, cancel in every state, failures kept apart."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from qcore.run.job_log import JobLog
from qcore.run.scheduler import Limits, Scheduler


class Probe:
    """Work that records how many copies run at once and in which order they started."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.started: list[str] = []
        self.calls = 0
        self.release = threading.Event()

    def work(self, tag: str, hold: float = 0.05, progress=None):
        with self.lock:
            self.running += 1
            self.calls += 1
            self.peak = max(self.peak, self.running)
            self.started.append(tag)
        try:
            deadline = time.time() + hold
            while time.time() < deadline or not self.release.is_set():
                progress(0.5, f"{tag} working")
                time.sleep(0.01)
                if hold and time.time() >= deadline:
                    break
            return f"result {tag}"
        finally:
            with self.lock:
                self.running -= 1


def test_limits_follow_the_cores():
    assert Limits.for_machine(cores=2) == Limits(cores=2, threads_per_job=1, slots=2)
    assert Limits.for_machine(cores=16) == Limits(cores=16, threads_per_job=4, slots=4)
    assert Limits.for_machine(cores=2, threads_per_job=2) == Limits(cores=2, threads_per_job=2, slots=1)


def test_running_jobs_never_exceed_the_slots():
    probe, sched = Probe(), Scheduler(Limits(2, 1, 2))
    probe.release.set()
    tickets = [sched.submit("t", probe.work, {"tag": str(i), "hold": 0.15}, owner=f"s{i}") for i in range(6)]
    assert [t.wait(20)["status"] for t in tickets] == ["done"] * 6
    assert probe.peak == 2 and probe.calls == 6


def test_queued_jobs_show_their_place_and_the_order_is_fair_across_sessions():
    probe, sched = Probe(), Scheduler(Limits(1, 1, 1))
    first = sched.submit("t", probe.work, {"tag": "a1", "hold": 0}, owner="a")
    a2 = sched.submit("t", probe.work, {"tag": "a2", "hold": 0}, owner="a")
    a3 = sched.submit("t", probe.work, {"tag": "a3", "hold": 0}, owner="a")
    b1 = sched.submit("t", probe.work, {"tag": "b1", "hold": 0}, owner="b")
    time.sleep(0.1)
    assert first.snapshot()["status"] == "running"
    # b has nothing running and was never served: it goes before a's second and third job
    assert (b1.snapshot()["status"], b1.snapshot()["position"], b1.snapshot()["ahead"]) == ("queued", 1, 1)
    assert (a2.snapshot()["position"], a3.snapshot()["position"], a3.snapshot()["ahead"]) == (2, 3, 3)
    probe.release.set()
    assert sched.idle(20)
    assert probe.started == ["a1", "b1", "a2", "a3"]


def test_cancel_works_queued_running_and_leaves_finished_results_alone():
    probe, sched = Probe(), Scheduler(Limits(1, 1, 1))
    running = sched.submit("t", probe.work, {"tag": "r", "hold": 0}, owner="a")
    queued = sched.submit("t", probe.work, {"tag": "q", "hold": 0}, owner="b")
    time.sleep(0.1)
    queued.cancel()
    assert queued.snapshot()["status"] == "cancelled"
    running.cancel()
    assert running.wait(5)["status"] == "cancelled"
    assert probe.started == ["r"]  # the queued one never ran
    done = sched.submit("t", probe.work, {"tag": "d", "hold": 0.01}, owner="c")
    probe.release.set()
    assert done.wait(5)["status"] == "done"
    done.cancel()
    assert done.snapshot()["status"] == "done" and done.snapshot()["result"] == "result d"


def test_identical_requests_share_one_computation_and_its_result():
    probe, sched = Probe(), Scheduler(Limits(2, 1, 2))
    a = sched.submit("t", probe.work, {"tag": "x", "hold": 0}, owner="a", key=("x",))
    b = sched.submit("t", probe.work, {"tag": "x", "hold": 0}, owner="b", key=("x",))
    time.sleep(0.1)
    assert a.snapshot()["shared"] == 2
    a.cancel()  # a leaves; b still wants it, so the work goes on
    time.sleep(0.1)
    assert a.snapshot()["status"] == "cancelled" and b.snapshot()["status"] == "running"
    probe.release.set()
    assert b.wait(5)["status"] == "done"
    later = sched.submit("t", probe.work, {"tag": "x", "hold": 0}, owner="c", key=("x",))
    assert later.wait(5)["result"] is b.snapshot()["result"]
    assert probe.calls == 1


def test_a_failing_job_fails_alone():
    probe, sched = Probe(), Scheduler(Limits(2, 1, 2))
    probe.release.set()

    def boom(progress=None):
        raise RuntimeError("broken model")

    bad = sched.submit("bad", boom, owner="a")
    good = [sched.submit("t", probe.work, {"tag": str(i), "hold": 0.05}, owner=f"s{i}") for i in range(3)]
    assert bad.wait(5)["status"] == "failed" and "broken model" in bad.snapshot()["error"]
    assert [t.wait(10)["status"] for t in good] == ["done"] * 3


def test_threads_per_job_and_exclusive_jobs_run_alone_on_all_cores():
    import torch

    seen, probe = {}, Probe()
    sched = Scheduler(Limits(2, 1, 2))

    def count(tag, progress=None):
        seen[tag] = (torch.get_num_threads(), probe.running)
        return tag

    probe.release.set()
    other = sched.submit("t", probe.work, {"tag": "o", "hold": 0.3}, owner="a")
    small = sched.submit("small", count, {"tag": "small"}, owner="b")
    assert small.wait(5)["status"] == "done"
    big = sched.submit("big", count, {"tag": "big"}, owner="c", exclusive=True)
    assert big.wait(5)["status"] == "done" and other.snapshot()["status"] == "done"  # it waited for `other`
    assert seen["small"][0] == 1 and seen["big"] == (2, 0)


def test_the_log_keeps_each_end(tmp_path):
    log = JobLog(tmp_path / "h.sqlite")
    probe, sched = Probe(), Scheduler(Limits(1, 1, 1), log=log)
    done = sched.submit("calibration", probe.work, {"tag": "d", "hold": 0.01}, owner="a", model="fm_resnet")
    queued = sched.submit("calibration", probe.work, {"tag": "q", "hold": 0}, owner="b")
    queued.cancel()
    probe.release.set()
    done.wait(5)
    sched.idle(5)
    time.sleep(0.1)
    rows = {r.id: r for r in log.recent()}
    assert rows[done.job_id].status == "done" and rows[done.job_id].model == "fm_resnet"
    assert rows[done.job_id].started is not None and rows[queued.job_id].status == "cancelled"


def test_joins_logged_out_of_order_keep_the_largest_count(tmp_path):
    """Joins reach the log outside the scheduler's lock: the sixth session's write may land before the fifth's."""
    log = JobLog(tmp_path / "h.sqlite")
    log.submitted("j1", "calibration", "fm_resnet")
    log.joined("j1", 6)
    log.joined("j1", 5)
    assert {r.id: r.sessions for r in log.recent()}["j1"] == 6


@pytest.mark.slow
def test_a_killed_server_leaves_finished_runs_and_marks_open_jobs_interrupted(tmp_path):
    """A real restart: a process finishes one job into the history, is killed (SIGKILL) in the middle of the
    next, and the next process marks that one interrupted while the finished run stays."""
    import subprocess
    import sys

    from qcore.store import history

    db = tmp_path / "history.sqlite"
    script = tmp_path / "server.py"
    script.write_text(_SERVER.format(db=str(db)))
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=root,
                            env={**os.environ, "PYTHONPATH": root})
    assert proc.stdout.readline().strip() == "second job running"
    proc.kill()
    proc.wait(10)
    log = JobLog(db)
    assert [r.status for r in log.recent()] == ["running", "done"]  # as the dead process left them
    Scheduler(Limits(1, 1, 1), log=log)  # the restarted server
    records = log.recent()
    assert [r.status for r in records] == ["interrupted", "done"]
    assert "server stopped" in records[0].error
    runs = history.list_runs(path=db)
    assert len(runs) == 1 and runs[0]["model"] == "finished-model"


_SERVER = """
import time
from qcore.store import history
from qcore.run.job_log import JobLog
from qcore.run.scheduler import Limits, Scheduler

class Identity:
    model, model_id, data, calib_size, seed = "finished-model", None, "fashion-mnist", 8, 0

class Report:
    kind, identity = "calibration", Identity()
    def to_dict(self): return {{"eval_size": 10}}
    def metrics(self): return {{"accuracy": 0.9}}
    def timings(self): return {{}}

def finished(progress=None):
    return Report()

def endless(progress=None):
    while True:
        progress(0.1, "working")
        time.sleep(0.05)

sched = Scheduler(Limits(1, 1, 1), log=JobLog({db!r}))
store = lambda result, job: history.record(result, path={db!r})
sched.submit("calibration", finished, after=store).wait(10)
second = sched.submit("calibration", endless, after=store)
while second.snapshot()["status"] != "running":
    time.sleep(0.01)
time.sleep(0.3)
print("second job running", flush=True)
time.sleep(60)
"""


def test_a_closed_session_s_job_finishes_unless_its_user_chose_to_cancel_it():
    """The reaper of closed sessions leaves a job to finish into the history, unless the user switched on
    "Cancel it if I close the page"; a shared job goes on for the sessions that are still there."""
    from qcore.run.jobs import JobReaper

    probe, sched = Probe(), Scheduler(Limits(2, 1, 2))
    keep = sched.submit("t", probe.work, {"tag": "keep", "hold": 0}, owner="gone-1")
    drop = sched.submit("t", probe.work, {"tag": "drop", "hold": 0}, owner="gone-2", cancel_on_close=True)
    reaper = JobReaper(lambda owner: not owner.startswith("gone"), grace=5, interval=3600)
    reaper.track("gone-1", keep)
    reaper.track("gone-2", drop)
    time.sleep(0.1)
    assert reaper.sweep(now=100.0) == []
    assert reaper.sweep(now=106.0) == [drop]
    assert drop.wait(5)["status"] == "cancelled" and keep.snapshot()["status"] == "running"
    probe.release.set()
    assert keep.wait(5)["status"] == "done"


def test_a_lone_job_uses_every_core_and_gives_them_up_when_another_starts():
    import torch

    sched, seen = Scheduler(Limits(2, 1, 2)), []
    second_started, first_shrank = threading.Event(), threading.Event()

    def watch(progress=None):
        for _ in range(200):
            progress(0.5, "working")
            seen.append(torch.get_num_threads())
            if second_started.is_set() and seen[-1] == 1:
                first_shrank.set()
                return seen[0]
            time.sleep(0.01)
        return None

    def second(progress=None):
        second_started.set()
        progress(0.1, "second")
        first_shrank.wait(5)
        return torch.get_num_threads()

    first = sched.submit("a", watch, owner="a")
    time.sleep(0.1)
    other = sched.submit("b", second, owner="b")
    assert first.wait(10)["result"] == 2  # alone: both cores
    assert seen[-1] == 1 and other.wait(10)["result"] == 1  # two running: one core each


def test_pages_can_wait_for_an_end_and_count_the_sessions_waiting():
    """What the pages' polling is sized by: sessions waiting (a shared job counts each of its sessions), and an end
    a page can block on instead of polling for it."""
    probe, sched = Probe(), Scheduler(Limits(2, 1, 1))
    a = sched.submit("t", probe.work, {"tag": "x", "hold": 0}, owner="a", key=("x",))
    b = sched.submit("t", probe.work, {"tag": "x", "hold": 0}, owner="b", key=("x",))
    c = sched.submit("t", probe.work, {"tag": "y", "hold": 0}, owner="c", key=("y",))  # queued behind x (one slot)
    time.sleep(0.1)
    assert sched.waiting_sessions() == 3
    assert not a.wait_for_end(0.05)  # still running: the wait times out
    threading.Timer(0.2, probe.release.set).start()
    started = time.monotonic()
    assert a.wait_for_end(5) and time.monotonic() - started < 3  # returns when the job ends, not at the timeout
    assert b.snapshot()["status"] == "done"
    c.cancel()
    assert c.wait_for_end(0) and sched.waiting_sessions() == 0
