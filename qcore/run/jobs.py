"""Long work in a background thread that never touches streamlit.

A `Job` runs `fn(job)`; the function reports progress with `job.update(fraction, message)`,
which also raises `Cancelled` once `job.cancel()` was called, so cancelling takes effect at the
next progress report. Metric rows streamed with `job.emit(row)` (loss per step, accuracy per
epoch) collect in order. Pages poll `job.snapshot()` (a plain dict, read under the lock).

A job runs either in a thread of its own (`start()`, for the CLI and tests) or, in the app, in a
worker thread of the `qcore.run.scheduler.Scheduler`, which queues it first (`status` "queued")
and calls `run_here()` when a slot is free. Jobs that time or train also hold
`qcore.runtime.machine.MACHINE_LOCK` themselves.
"""

from __future__ import annotations

import threading
import time
import traceback
from enum import StrEnum
from typing import Any, Callable

__all__ = ["Cancelled", "Job", "JobReaper", "JobStatus", "FINAL_STATES", "OPEN_STATES", "wait_until_done"]

LOG_LINES = 100


class JobStatus(StrEnum):
    """Where a job stands. A str enum: snapshots, the job log's rows and JSON carry the plain value ("done")."""

    PENDING = "pending"  # made, not yet started or queued
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # its server process died while it was open (qcore.run.job_log)


FINAL_STATES = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED)
OPEN_STATES = (JobStatus.QUEUED, JobStatus.RUNNING)


class Cancelled(Exception):
    """Raised inside a job's function when the job was cancelled."""


class Job:
    """A cancellable background computation with lock-guarded progress, log, result and error."""

    def __init__(self, name: str, fn: Callable[["Job"], Any], user_errors: tuple[type[BaseException], ...] = ()):
        self.name = name
        self._fn = fn
        self._user_errors = user_errors
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._ended = threading.Event()  # set with the final state: lets a page pick up the end as it happens
        self._state = {"status": JobStatus.PENDING, "progress": 0.0, "message": "", "log": [], "result": None,
                       "error": None, "started": None, "finished": None, "metrics": []}
        self._thread = threading.Thread(target=self._run, name=f"job:{name}", daemon=True)

    def start(self) -> "Job":
        """Run in a thread of its own, now."""
        with self._lock:
            self._state["status"], self._state["started"] = JobStatus.RUNNING, time.time()
        self._thread.start()
        return self

    def queue(self) -> "Job":
        """Mark the job as waiting for a scheduler's slot (it runs when the scheduler calls `run_here`)."""
        with self._lock:
            self._state["status"] = JobStatus.QUEUED
        return self

    def mark_running(self) -> None:
        """The scheduler gave the job a slot (its worker thread is about to call `run_here`)."""
        with self._lock:
            if self._state["status"] not in FINAL_STATES:
                self._state["status"], self._state["started"] = JobStatus.RUNNING, time.time()

    def run_here(self) -> None:
        """Run in the calling thread (a scheduler's worker) until done, failed or cancelled; a job cancelled
        while it was still queued does not start."""
        with self._lock:
            if self._state["status"] in FINAL_STATES:
                return
            self._state["status"] = JobStatus.RUNNING
            self._state["started"] = self._state["started"] or time.time()
        self._run()

    def cancel_unstarted(self) -> None:
        """End a job that never ran: cancelled while it was still queued."""
        self._cancel.set()
        with self._lock:
            if self._state["status"] not in FINAL_STATES:
                self._state.update(status=JobStatus.CANCELLED, finished=time.time())
        self._ended.set()

    def _run(self) -> None:
        if self._cancel.is_set():
            with self._lock:
                self._state.update(status=JobStatus.CANCELLED, finished=time.time())
            self._ended.set()
            return
        try:
            result = self._fn(self)
            final = {"status": JobStatus.DONE, "result": result, "progress": 1.0}
        except Cancelled:
            final = {"status": JobStatus.CANCELLED}
        except self._user_errors as exc:
            final = {"status": JobStatus.FAILED, "error": str(exc)}
        except Exception as exc:  # unexpected: keep the type and the last frame for the message
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            final = {"status": JobStatus.FAILED, "error": f"{type(exc).__name__}: {exc} ({tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})"}
        with self._lock:
            self._state.update(final, finished=time.time())
        self._ended.set()

    def update(self, fraction: float | None = None, message: str | None = None) -> None:
        """Report progress (0..1) and/or a message; raises Cancelled if the job was cancelled."""
        if self._cancel.is_set():
            raise Cancelled()
        with self._lock:
            if fraction is not None:
                self._state["progress"] = max(0.0, min(1.0, float(fraction)))
            if message:
                self._state["message"] = message
                log = self._state["log"]
                log.append((round(time.time() - (self._state["started"] or time.time()), 1), message))
                del log[:-LOG_LINES]

    def emit(self, row) -> None:
        """Append one metric row to the job's stream (a typed, frozen row such as qcore.train.qat.QATEpochRow;
        a dict is copied); raises Cancelled like update."""
        if self._cancel.is_set():
            raise Cancelled()
        with self._lock:
            self._state["metrics"].append(dict(row) if isinstance(row, dict) else row)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def snapshot(self) -> dict:
        with self._lock:
            return {**self._state, "log": list(self._state["log"]), "metrics": list(self._state["metrics"]),
                    "name": self.name}

    @property
    def done(self) -> bool:
        return self.snapshot()["status"] in FINAL_STATES

    def wait_for_end(self, timeout: float) -> bool:
        """Block up to `timeout` seconds until the job has ended; True if it has."""
        return self._ended.wait(timeout)

    def wait(self, timeout: float | None = None) -> dict:
        """The snapshot once the job has ended (or `timeout` seconds passed), wherever it runs."""
        return wait_until_done(self, timeout)


def wait_until_done(handle, timeout: float | None = None) -> dict:
    """Poll `handle.snapshot()` (a Job or a scheduler's Ticket) until it has ended or `timeout` seconds passed."""
    deadline = None if timeout is None else time.time() + timeout
    while not handle.done and (deadline is None or time.time() < deadline):
        time.sleep(0.01)
    return handle.snapshot()


class JobReaper:
    """Cancels the jobs of owners that are gone (a browser session closed), after a grace period; a job
    that says `cancel_on_close = False` (the app's default: it finishes into the history) is left to run.

    `is_alive(owner)` answers whether an owner is still there; it is asked every `interval`
    seconds from one daemon thread. An owner has to stay gone for `grace` seconds, so a browser
    that reconnects after a network hiccup keeps its jobs.
    """

    def __init__(self, is_alive: Callable[[str], bool], grace: float = 30.0, interval: float = 2.0):
        self._is_alive = is_alive
        self.grace, self.interval = grace, interval
        self._lock = threading.Lock()
        self._jobs: list[tuple[str, Job]] = []
        self._gone_since: dict[str, float] = {}
        self._thread: threading.Thread | None = None

    def track(self, owner: str, job: Job) -> None:
        with self._lock:
            self._jobs.append((owner, job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="job-reaper", daemon=True)
                self._thread.start()

    def sweep(self, now: float | None = None) -> list[Job]:
        """One check; returns the jobs it cancelled."""
        now = time.time() if now is None else now
        cancelled = []
        with self._lock:
            self._jobs = [(o, j) for o, j in self._jobs if not j.done]
            owners = {o for o, _ in self._jobs}
        for owner in owners:
            if self._is_alive(owner):
                self._gone_since.pop(owner, None)
                continue
            since = self._gone_since.setdefault(owner, now)
            if now - since >= self.grace:
                for o, job in list(self._jobs):
                    # a scheduler's ticket is cancelled only if its user asked for that; a bare Job always
                    if o == owner and not job.cancelled and getattr(job, "cancel_on_close", True):
                        job.cancel()
                        cancelled.append(job)
        for owner in set(self._gone_since) - owners:
            self._gone_since.pop(owner)
        return cancelled

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.sweep()
            except Exception:  # the reaper must outlive a failing liveness check
                pass
