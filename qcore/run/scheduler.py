"""One queue for every background job of a server, so that a classroom on one machine is served in turn.

Why: jobs started freely in threads thrash a 2-core machine (every job's torch and OpenMP threads
spin against every other's; four calibrations at once did not finish in 15 minutes) and nobody
can tell whether their job is waiting, running or dead. Here:

- at most `Limits.slots` jobs run at once (cores / threads per job), each with its share of the cores
  as torch threads, set in its own worker thread: all cores for a job running alone, `threads_per_job`
  when the slots are full. A running job takes its current share at each progress report (a batch), so
  a lone user's job is not held to one core, and running jobs never ask for more cores than there are
  for longer than one batch; a job that is mostly timing is `exclusive`: it waits for the others and runs
  alone on all cores;
- the next job is chosen fairly across sessions (the owner with the fewest running jobs, then the
  one served longest ago, then first come), and every session can see its place: queued (position,
  jobs ahead), running (progress, ETA), done, failed (reason), cancelled;
- identical requests (same `key`: model, data, config, seed) share one computation, and a finished
  one's result is kept for the next identical request; a session cancelling a shared job only
  leaves it, the work stops when no session wants it any more;
- a job's end is written to the job log (qcore.run.job_log), and a failing job is only its own
  failure: the worker catches everything and the queue moves on.

Runners decide where a job's function runs: in this process (`LocalRunner`) or as a Ray task on a
cluster (`qcore.run.ray_jobs.RayRunner`); the queue, fairness and sharing are the same.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections import Counter, OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from qcore.run.jobs import FINAL_STATES, Job, JobStatus, wait_until_done
from qcore.run.job_log import JobLog

__all__ = ["Limits", "LocalRunner", "Scheduler", "Ticket", "torch_threads"]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Limits:
    """How many jobs run at once and with how many torch threads each."""

    cores: int
    threads_per_job: int
    slots: int

    @classmethod
    def for_machine(cls, cores: int | None = None, threads_per_job: int | None = None,
                    slots: int | None = None) -> "Limits":
        """Defaults: the cores this process may use ($QX_CORES), a quarter of them per job but at least one
        ($QX_JOB_THREADS), and as many slots as fit ($QX_JOB_SLOTS): 2 cores -> 2 jobs of 1 thread."""
        cores = int(cores or os.environ.get("QX_CORES") or _cores())
        threads = min(cores, int(threads_per_job or os.environ.get("QX_JOB_THREADS") or max(1, cores // 4)))
        slots = int(slots or os.environ.get("QX_JOB_SLOTS") or max(1, cores // threads))
        return cls(cores, threads, slots)


@contextmanager
def torch_threads(n: int):
    """`n` torch (OpenMP) threads for work done in the calling thread. OpenMP keeps the thread count per
    thread once a thread has initialised it (the get_num_threads call below does that first), so jobs
    in other worker threads keep theirs."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LocalRunner:
    """Runs a job's function in the scheduler's worker thread, in this process."""

    name = "local"
    adaptive = True  # a job's thread count follows the load at each progress report

    def cores(self) -> int | None:
        return None  # the machine's own

    def exclusive_threads(self) -> int | None:
        return None  # all of the machine's cores

    def call(self, fn: Callable, kwargs: dict, job: Job, threads: Callable[[], int], metrics: bool) -> Any:
        """`fn` in this thread with `threads()` torch threads, asked again at every progress report."""
        import torch

        extra = {"on_metric": job.emit} if metrics else {}
        current = [threads()]

        def progress(fraction=None, message=None):
            job.update(fraction, message)
            share = threads()
            if share != current[0]:
                torch.set_num_threads(share)  # this thread's OpenMP count only (see torch_threads)
                current[0] = share

        with torch_threads(current[0]):
            return fn(**kwargs, **extra, progress=progress)


@dataclass(eq=False)
class _Work:
    """One computation in the queue, shared by the tickets of identical requests."""

    fn: Callable
    kwargs: dict
    owner: str
    key: Hashable | None
    exclusive: bool
    metrics: bool
    after: Callable | None
    model: str | None
    seq: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    submitted: float = field(default_factory=time.time)
    tickets: list = field(default_factory=list)
    job: Job | None = None
    logged: threading.Event = field(default_factory=threading.Event)

    def wanted(self) -> bool:
        return any(not t.left for t in self.tickets)


class Ticket:
    """One session's handle on a (possibly shared) job: what its page polls and its Cancel button stops.
    `snapshot()` is the job's, plus where it stands in the queue."""

    def __init__(self, scheduler: "Scheduler", work: _Work, owner: str, cancel_on_close: bool):
        self._scheduler, self._work = scheduler, work
        self.owner, self.cancel_on_close = owner, cancel_on_close
        self.left = False

    def snapshot(self) -> dict:
        snap = self._scheduler.snapshot(self._work)
        if self.left and snap["status"] not in (JobStatus.DONE, JobStatus.FAILED):
            snap.update(status=JobStatus.CANCELLED)
        return snap

    def cancel(self) -> None:
        self._scheduler.leave(self)

    @property
    def cancelled(self) -> bool:
        return self.left

    @property
    def done(self) -> bool:
        return self.snapshot()["status"] in FINAL_STATES

    @property
    def job_id(self) -> str:
        return self._work.id

    def wait(self, timeout: float | None = None) -> dict:
        return wait_until_done(self, timeout)

    def wait_for_end(self, timeout: float) -> bool:
        """Block up to `timeout` seconds until the job has ended (or this session left it); True if so."""
        return self.left or self._work.job.wait_for_end(timeout)


class Scheduler:
    """The queue. `submit(...)` returns a `Ticket` at once; the work runs when a slot is free."""

    def __init__(self, limits: Limits | None = None, runner=None, log: JobLog | None = None, keep_results: int = 8):
        self.runner = runner or LocalRunner()
        self.limits = limits or Limits.for_machine(cores=self.runner.cores())
        self.log = log
        self.keep_results = keep_results
        self._cond = threading.Condition()
        self._queue: list[_Work] = []
        self._running: list[_Work] = []
        self._open: dict[Hashable, _Work] = {}  # queued or running, by request key
        self._kept: OrderedDict[Hashable, _Work] = OrderedDict()  # finished results, by request key
        self._served: dict[str, int] = {}  # owner -> when it last got a slot (a tick count)
        self._ticks = 0
        self._seq = itertools.count()
        self._exclusive: int | None = None
        if log is not None:
            self._quietly(log.mark_interrupted)

    def submit(self, name: str, fn: Callable, kwargs: dict | None = None, *, owner: str = "local",
               key: Hashable | None = None, exclusive: bool = False, metrics: bool = False,
               after: Callable | None = None, user_errors: tuple = (), model: str | None = None,
               cancel_on_close: bool = False) -> Ticket:
        """Queue `fn(**kwargs, progress=...)` (and `on_metric=` with `metrics`) for `owner`. With a `key`, an
        identical request already queued, running or kept shares that computation. `after(result, job)` runs
        in this process once the function returned (e.g. storing the run in the history)."""
        with self._cond:
            work = self._shared(key)
            new = work is None
            if new:
                work = _Work(fn, dict(kwargs or {}), owner, key, exclusive, metrics, after, model, next(self._seq))
                work.job = Job(name, lambda job, w=work: self._execute(w, job), user_errors).queue()
                self._queue.append(work)
                if key is not None:
                    self._open[key] = work
            ticket = Ticket(self, work, owner, cancel_on_close)
            work.tickets.append(ticket)
            sessions = sum(not t.left for t in work.tickets)
        if self.log is not None:
            self._quietly(self.log.submitted if new else self.log.joined, work.id,
                          *((name, model) if new else (sessions,)))
        work.logged.set()
        with self._cond:
            self._dispatch()
        return ticket

    def _shared(self, key: Hashable | None) -> _Work | None:
        if key is None:
            return None
        work = self._open.get(key)
        if work is not None and not work.job.cancelled:
            return work
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        return None

    def _exclusive_threads(self) -> int:
        """Threads of a job that times: all cores here; on a cluster, one whole node (asked once)."""
        if self._exclusive is None:
            self._exclusive = min(self.limits.cores, self.runner.exclusive_threads() or self.limits.cores)
        return self._exclusive

    def _threads(self, work: _Work) -> int:
        """A running job's share of the cores now: all of them when it runs alone (or must), else the cores split
        over the running jobs, never fewer than `threads_per_job`."""
        if work.exclusive:
            return self._exclusive_threads()
        if not getattr(self.runner, "adaptive", False):  # e.g. a Ray task keeps the CPUs it asked for
            return self.limits.threads_per_job
        with self._cond:
            running = max(1, len(self._running))
        return max(self.limits.threads_per_job, self.limits.cores // running)

    def _cost(self, work: _Work) -> int:
        """Slots a job takes: one, or as many as its threads fill when it must run alone."""
        if not work.exclusive:
            return 1
        return max(1, min(self.limits.slots, self._exclusive_threads() // self.limits.threads_per_job))

    def _order(self) -> list[_Work]:
        """The queue in the order it will be served: the owner with the fewest running jobs first, then
        the one served longest ago, then first come (simulated pick by pick, so positions are honest)."""
        running = Counter(w.owner for w in self._running)
        served, tick = dict(self._served), self._ticks
        left, order = list(self._queue), []
        while left:
            nxt = min(left, key=lambda w: (running[w.owner], served.get(w.owner, -1), w.seq))
            left.remove(nxt)
            order.append(nxt)
            running[nxt.owner] += 1
            tick += 1
            served[nxt.owner] = tick
        return order

    def _dispatch(self) -> None:
        """Start queued work while slots are free (called under the lock). An exclusive job at the head
        waits for the running ones rather than being overtaken, so it cannot starve."""
        while self._queue:
            head = self._order()[0]
            if sum(self._cost(w) for w in self._running) + self._cost(head) > self.limits.slots:
                return
            self._queue.remove(head)
            self._running.append(head)
            head.job.mark_running()  # in the same step as leaving the queue: a snapshot never sees it in between
            self._ticks += 1
            self._served[head.owner] = self._ticks
            threading.Thread(target=self._worker, args=(head,), name=f"job:{head.job.name}", daemon=True).start()

    def _execute(self, work: _Work, job: Job) -> Any:
        result = self.runner.call(work.fn, work.kwargs, job, lambda: self._threads(work), work.metrics)
        if work.after is not None:
            work.after(result, job)
        return result

    def _worker(self, work: _Work) -> None:
        work.logged.wait(10)
        if self.log is not None:
            self._quietly(self.log.started, work.id)
        try:
            work.job.run_here()  # catches everything the work raises: a failure is this job's alone
        finally:
            snap = work.job.snapshot()
            with self._cond:
                self._running.remove(work)
                if self._open.get(work.key) is work:
                    del self._open[work.key]
                if snap["status"] == JobStatus.DONE and work.key is not None and self.keep_results:
                    self._kept[work.key] = work
                    while len(self._kept) > self.keep_results:
                        self._kept.popitem(last=False)
                self._dispatch()
                self._cond.notify_all()
            if self.log is not None:
                self._quietly(self.log.ended, work.id, snap["status"], snap["error"])

    def leave(self, ticket: Ticket) -> None:
        """A session cancels its ticket. The work itself stops (in the queue: at once; running: at its next
        progress report) only when no other session still wants it."""
        with self._cond:
            if ticket.left:
                return
            ticket.left = True
            work = ticket._work
            if work.wanted() or work.job.done:
                return
            if work in self._queue:
                self._queue.remove(work)
                if self._open.get(work.key) is work:
                    del self._open[work.key]
                work.job.cancel_unstarted()
                self._cond.notify_all()
                ended = True
            else:
                work.job.cancel()
                ended = False
        if ended and self.log is not None:
            self._quietly(self.log.ended, work.id, JobStatus.CANCELLED)

    def snapshot(self, work: _Work) -> dict:
        """The job's state and where it stands, read together under the queue's lock (a job leaves the queue and
        becomes running in one step there): queued (1-based position, jobs ahead of it) or running (ETA)."""
        with self._cond:
            snap = work.job.snapshot()
            shared = sum(not t.left for t in work.tickets)
            if work in self._queue:
                position = self._order().index(work) + 1
                return {**snap, "position": position, "ahead": len(self._running) + position - 1, "eta_s": None,
                        "shared": shared}
        eta = None
        if snap["status"] == JobStatus.RUNNING and snap["started"] and snap["progress"] >= 0.02:
            elapsed = time.time() - snap["started"]
            eta = elapsed * (1 - snap["progress"]) / snap["progress"]
        return {**snap, "position": 0, "ahead": 0, "eta_s": eta, "shared": shared}

    def waiting_sessions(self) -> int:
        """Sessions waiting on a queued or running job, shared ones counted once per session."""
        with self._cond:
            return sum(not t.left for work in (*self._queue, *self._running) for t in work.tickets)

    def spare_threads(self) -> int:
        """Cores the running local jobs leave for other work in this process (at least one)."""
        if not getattr(self.runner, "adaptive", False):
            return self.limits.cores
        with self._cond:
            running = list(self._running)
        used = sum(self._threads(w) for w in running)
        return max(1, self.limits.cores - used)

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or running; returns whether it got there."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._running, timeout)

    @staticmethod
    def _quietly(fn, *args) -> None:
        """The job log is a record, not the work: a locked or read-only history file never stops a job."""
        import sqlite3

        try:
            fn(*args)
        except (sqlite3.Error, OSError):
            pass
