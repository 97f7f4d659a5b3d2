"""`python -m qcore bench sessions --sessions N`: N sessions press Run calibration at the same moment.

What a classroom does to one server, without browsers: N owners submit the Calibration page's job
(calibration study, 128 calibration and 300 evaluation images by default) to one `Scheduler` at
once, each with its own seed (distinct requests: nothing is shared; `--same` makes them identical,
so they share one computation). Measured in one process:

- the single-job time: one job alone through the same scheduler (its threads per job), and one job
  alone on all cores (the fastest a lone user gets; the stricter yardstick);
- per session: wait (queued), run and total seconds, and its position in the order it was served;
- the makespan against 8 x the single-job time x 1.5 (the bar the issue sets, for N sessions: N x ...),
  and starvation: a session waiting longer than the jobs submitted with it could explain.
A warm-up job runs first (data decoded, caches warm) and is not counted.
"""

from __future__ import annotations

import math
import time

from qcore.analysis.experiments import calibration_study
from qcore.runtime.machine import cpu_features
from qcore.run.jobs import JobStatus
from qcore.run.ray_jobs import make_runner
from qcore.run.scheduler import Limits, Scheduler, torch_threads
from qcore.zoo.models import DEFAULT_MODEL, load_model

__all__ = ["bench_sessions"]


def _job_kwargs(loaded, calib_size: int, eval_size: int, seed: int) -> dict:
    return {"model": loaded, "calib_size": calib_size, "eval_size": eval_size, "seed": seed, "act_bits": (8, 6, 4)}


def _alone(loaded, calib_size: int, eval_size: int, threads: int) -> float:
    """Seconds of one job run directly in this thread with `threads` torch threads."""
    start = time.perf_counter()
    with torch_threads(threads):
        calibration_study(**_job_kwargs(loaded, calib_size, eval_size, 0))
    return time.perf_counter() - start


def _session_rows(tickets: list, t0: float) -> list[dict]:
    rows = []
    for i, ticket in enumerate(tickets):
        snap = ticket.wait()
        assert snap["status"] == JobStatus.DONE, snap["error"]
        rows.append({"session": i, "wait_s": round(snap["started"] - t0, 2),
                     "run_s": round(snap["finished"] - snap["started"], 2), "total_s": round(snap["finished"] - t0, 2)})
    order = sorted(rows, key=lambda r: r["wait_s"])
    for rank, row in enumerate(order):
        row["served_as"] = rank + 1
    return rows


def bench_sessions(sessions: int, model: str | None = None, calib_size: int = 128, eval_size: int = 300,
                   same: bool = False, executor: str = "local", say=None) -> dict:
    say = say or (lambda line: None)
    loaded = load_model(model or DEFAULT_MODEL)
    runner = make_runner(executor)
    limits = Limits.for_machine(cores=runner.cores())
    say(f"warm-up, then one job alone ({limits.threads_per_job} and {limits.cores} threads)")
    _alone(loaded, calib_size, eval_size, limits.cores)
    single_job = _alone(loaded, calib_size, eval_size, limits.threads_per_job)
    single_all_cores = _alone(loaded, calib_size, eval_size, limits.cores)
    sched = Scheduler(limits, runner, keep_results=0)
    say(f"{sessions} sessions at once on {limits.slots} slots")
    t0 = time.time()
    tickets = [sched.submit("calibration", calibration_study,
                            _job_kwargs(loaded, calib_size, eval_size, 0 if same else 1 + i), owner=f"session-{i}",
                            key=("bench", 0 if same else i)) for i in range(sessions)]
    rows = _session_rows(tickets, t0)
    makespan = max(r["total_s"] for r in rows)
    rounds = math.ceil(sessions / limits.slots)
    wait_bound = (rounds - 1) * max(r["run_s"] for r in rows) * 1.5  # what the jobs ahead of the last one explain
    yardstick = single_all_cores  # the stricter of the two single-job times
    return {
        "bench": "sessions", "sessions": sessions, "same_request": same, "executor": executor,
        "model": loaded.name, "calib_size": calib_size, "eval_size": eval_size,
        "limits": {"cores": limits.cores, "threads_per_job": limits.threads_per_job, "slots": limits.slots},
        "single_job_s": round(single_job, 2), "single_job_all_cores_s": round(single_all_cores, 2),
        "makespan_s": round(makespan, 2),
        "makespan_vs_n_single_jobs": round(makespan / (sessions * yardstick), 3),
        "goal": "makespan <= 1.5 x sessions x single job (all cores)", "goal_met": makespan <= 1.5 * sessions * yardstick,
        "fairness": {"max_wait_s": max(r["wait_s"] for r in rows), "wait_bound_s": round(wait_bound, 2),
                     "starved": [r["session"] for r in rows if r["wait_s"] > wait_bound + 1.0],
                     "served_in_submission_order": [r["served_as"] for r in rows] == list(range(1, sessions + 1))},
        "per_session": rows, "machine": cpu_features(),
    }
