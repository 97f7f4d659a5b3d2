"""Where a queued job runs: in this process, or as a Ray task on a cluster (a bigger class = more machines).

`make_runner("local" | "ray" | "ray://HOST:PORT" | "HOST:PORT")` gives the scheduler its runner.
The Ray runner submits the job's engine function as one task that asks for as many CPUs as the job
has threads, and talks to it through a small actor: the task reports progress and metric rows
there and reads the cancel flag back (so Cancel stops it at its next report, as locally); the
server's worker thread polls the actor and forwards both to the job the page shows. The result
comes back to the server, where the history is written. The queue, fairness and sharing stay the
scheduler's; the slots are the cluster's CPUs divided by the threads per job.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from qcore.run.executors import ExecutorUnavailable, RayExecutor
from qcore.run.jobs import Cancelled, Job
from qcore.run.scheduler import LocalRunner

__all__ = ["RayRunner", "make_runner"]


class _Channel:
    """The Ray actor between a running task and its job on the server."""

    def __init__(self):
        self.progress, self.message, self.rows, self.cancelled = None, None, [], False

    def report(self, fraction, message) -> bool:
        if fraction is not None:
            self.progress = fraction
        if message:
            self.message = message
        return self.cancelled

    def emit(self, row: dict) -> bool:
        self.rows.append(row)
        return self.cancelled

    def drain(self) -> tuple:
        rows, self.rows = self.rows, []
        return self.progress, self.message, rows

    def cancel(self) -> None:
        self.cancelled = True


def _run_task(fn: Callable, kwargs: dict, channel, threads: int, metrics: bool) -> Any:
    """The task body, in a Ray worker: the job's threads, then the engine function with remote callbacks."""
    import ray
    import torch

    torch.get_num_threads()  # initialise this thread's OpenMP count before setting it (see scheduler.torch_threads)
    torch.set_num_threads(threads)

    def progress(fraction=None, message=None):
        if ray.get(channel.report.remote(fraction, message)):
            raise Cancelled()

    def on_metric(row):
        if ray.get(channel.emit.remote(dict(row))):
            raise Cancelled()

    return fn(**kwargs, **({"on_metric": on_metric} if metrics else {}), progress=progress)


class RayRunner:
    """Jobs as Ray tasks on a local instance (`address` None, `workers` CPUs) or an existing cluster."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, max_retries: int = 1,
                 poll_s: float = 0.5):
        self._ray = RayExecutor(address, workers)  # Ray's import, reachability check and one-time init
        self.max_retries, self.poll_s = max_retries, poll_s

    def cores(self) -> int:
        return max(1, int(self._ray._init().cluster_resources().get("CPU", 1)))

    def exclusive_threads(self) -> int:
        """A job that times takes one whole node (the largest), never more than a node has."""
        ray = self._ray._init()
        return max(1, max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1))

    def call(self, fn: Callable, kwargs: dict, job: Job, threads: Callable[[], int], metrics: bool) -> Any:
        """`fn` as one Ray task asking for the job's share of CPUs when it starts (a task keeps what it got)."""
        ray = self._ray._init()
        threads = threads()
        channel = ray.remote(num_cpus=0)(_Channel).remote()
        task = ray.remote(num_cpus=threads, max_retries=self.max_retries, retry_exceptions=False)(_run_task)
        ref = task.remote(fn, kwargs, channel, threads, metrics)
        try:
            while True:
                done, _ = ray.wait([ref], timeout=self.poll_s)
                fraction, message, rows = ray.get(channel.drain.remote())
                for row in rows:
                    job.emit(row)
                job.update(fraction, message)  # raises Cancelled once the user cancelled
                if done:
                    return _result(ray, ref)
        except Cancelled:
            channel.cancel.remote()  # the task stops at its next report
            ray.cancel(ref)
            raise
        finally:
            ray.kill(channel, no_restart=True)


def _result(ray, ref) -> Any:
    """The task's value; an exception inside it is raised here as itself (a ValueError stays a user error)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        raise (cause if isinstance(cause, BaseException) else exc) from None


def make_runner(spec: str | None):
    """"local" (or None), "ray" (RAY_ADDRESS if set, else a local instance on this machine's cores), or a
    cluster address ("ray://HOST:PORT", "HOST:PORT")."""
    if spec in (None, "", "local"):
        return LocalRunner()
    if spec == "ray":
        return RayRunner(os.environ.get("RAY_ADDRESS") or None, int(os.environ.get("QX_RAY_WORKERS") or 0) or None)
    if spec.startswith("ray://") or ":" in spec:
        return RayRunner(spec)
    raise ExecutorUnavailable(f"unknown executor {spec!r}: local, ray, ray://HOST:PORT or HOST:PORT")
