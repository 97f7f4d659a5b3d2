"""Executors for the engine's sweeps: in this process, or Ray tasks on a local instance or a cluster.

`make_executor("local" | "ray" | "ray://HOST:PORT" | "HOST:PORT", workers)` gives an object with the
`qcore.quant.work.Executor` interface. The Ray executor puts the items' shared state into Ray's object
store once (`ray.put`) and submits one task per item; a task whose worker process dies is retried
(`max_retries`), an exception inside an item is not (items are deterministic: it would fail again).
An address that cannot be reached is a one-line `ExecutorUnavailable` after a short TCP check, never a
hang in `ray.init`.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

from qcore.quant.progress import Msg, silent
from qcore.quant.work import ExecutorInfo, LocalExecutor

__all__ = ["ExecutorUnavailable", "RayExecutor", "make_executor", "EXECUTORS"]

EXECUTORS = ("local", "ray")  # a Ray cluster is "ray://HOST:PORT" or "HOST:PORT" (or RAY_ADDRESS with "ray")
_RAY_LOCK = threading.Lock()  # ray.init / shutdown are process-wide


class ExecutorUnavailable(ValueError):
    """The executor asked for cannot run here (Ray missing, cluster unreachable): a user-facing message."""


def _reachable(address: str, timeout: float) -> None:
    """A TCP connect to the cluster's head before ray.init, which would otherwise retry for minutes."""
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise ExecutorUnavailable(f"a Ray address is ray://HOST:PORT or HOST:PORT, not {address!r}")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ExecutorUnavailable(f"cannot reach the Ray cluster at {host}:{port} ({exc.strerror or exc})") from None


class RayExecutor:
    """Sweep items as Ray tasks. `address` None: a local Ray instance with `workers` CPUs (started on
    first use, kept for the process); otherwise an existing cluster (its CPUs are the workers)."""

    def __init__(self, address: str | None = None, workers: int | None = None, max_retries: int = 3,
                 connect_timeout: float = 5.0):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ExecutorUnavailable("Ray is not installed (pip install ray, pinned in requirements.txt)") from None
        if address and address != "auto":
            _reachable(address, connect_timeout)
        self.address, self.workers, self.max_retries = address, workers, max_retries

    def _init(self):
        import ray

        with _RAY_LOCK:
            if not ray.is_initialized():
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local instance on loopback only
                kwargs = {"address": self.address} if self.address else {
                    "num_cpus": self.workers or os.cpu_count(), "include_dashboard": False}
                try:
                    ray.init(**kwargs, log_to_driver=False, configure_logging=False,
                             runtime_env={"env_vars": {"PYTHONPATH": _project_root()}})
                except (ConnectionError, TimeoutError, RuntimeError) as exc:  # e.g. a port that is not Ray's
                    raise ExecutorUnavailable(f"Ray did not start at {self.address or 'this machine'}: "
                                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        return ray

    def info(self) -> ExecutorInfo:
        ray = self._init()
        cpus = int(ray.cluster_resources().get("CPU", 0))
        return ExecutorInfo(engine="ray", workers=cpus, address=self.address or "local")

    def map(self, fn, shared, items, progress=None, what: str = "items") -> list:
        ray = self._init()
        say = progress or silent
        task = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(fn)
        ref = ray.put(shared)  # once, not per task
        futures = [task.remote(ref, item) for item in items]
        order = {f: i for i, f in enumerate(futures)}
        results: list = [None] * len(items)
        pending = list(futures)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                for f in done:
                    results[order[f]] = ray.get(f)
                finished = len(items) - len(pending)
                say(finished / len(items), Msg("{i}/{n} {what} on {workers} Ray workers", i=finished, n=len(items),
                                               what=what, workers=self.info()["workers"]))
        except BaseException:
            for f in pending:
                ray.cancel(f, force=True)
            raise
        return results


def _project_root() -> str:
    """Where `qcore` is imported from, so Ray workers on this machine import the same code."""
    import qcore

    return os.path.dirname(os.path.dirname(os.path.abspath(qcore.__file__)))


def make_executor(spec: str | None, workers: int | None = None):
    """"local" (or None), "ray" (RAY_ADDRESS if set, else a local instance with `workers` CPUs), or a
    cluster address ("ray://HOST:PORT", "HOST:PORT")."""
    if spec in (None, "", "local"):
        return LocalExecutor()
    if spec == "ray":
        return RayExecutor(os.environ.get("RAY_ADDRESS") or None, workers)
    if spec.startswith("ray://") or ":" in spec:
        return RayExecutor(spec, workers)
    raise ExecutorUnavailable(f"unknown executor {spec!r}: local, ray, ray://HOST:PORT or HOST:PORT")
