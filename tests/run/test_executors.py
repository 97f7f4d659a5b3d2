"""Executors: the local one is the reference; Ray runs the same items with the same numbers, retries a worker
that dies, and an unreachable cluster is a one-line error, not a hang."""

from __future__ import annotations

import os
import time

import pytest

from qcore.quant.work import LocalExecutor
from qcore.run.executors import ExecutorUnavailable, RayExecutor, make_executor


def _square(shared, item):
    return shared["offset"] + item * item


def _dies_once(shared, item):
    """Kills its own worker process the first time item 1 runs (a marker file remembers)."""
    marker = os.path.join(shared["dir"], f"died-{item}")
    if item == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return item * 10


def test_local_executor_runs_items_in_order_with_progress():
    seen = []
    out = LocalExecutor().map(_square, {"offset": 1}, [1, 2, 3], lambda f, m: seen.append((f, m)), what="squares")
    assert out == [2, 5, 10] and seen[-1] == (1.0, "3/3 squares")
    assert LocalExecutor().info() == {"engine": "local", "workers": 1}


def test_executor_specs():
    assert isinstance(make_executor(None), LocalExecutor) and isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(ExecutorUnavailable, match="unknown executor"):
        make_executor("spark")


def test_an_unreachable_cluster_is_one_line_fast():
    start = time.perf_counter()
    with pytest.raises(ExecutorUnavailable, match="cannot reach the Ray cluster at 127.0.0.1:9") as err:
        make_executor("ray://127.0.0.1:9")  # the discard port: nothing listens
    assert time.perf_counter() - start < 10 and "\n" not in str(err.value)
    with pytest.raises(ExecutorUnavailable, match="HOST:PORT"):
        RayExecutor("ray://nohostport")


@pytest.fixture(scope="module")
def ray_two_workers():
    import ray

    ex = RayExecutor(workers=2)
    yield ex
    ray.shutdown()


@pytest.mark.slow
def test_ray_runs_the_items_and_retries_a_dead_worker(ray_two_workers, tmp_path):
    assert ray_two_workers.map(_square, {"offset": 1}, [1, 2, 3]) == [2, 5, 10]
    assert ray_two_workers.info()["workers"] == 2 and ray_two_workers.info()["engine"] == "ray"
    out = ray_two_workers.map(_dies_once, {"dir": str(tmp_path)}, [0, 1, 2])
    assert out == [0, 10, 20] and (tmp_path / "died-1").exists()  # item 1's worker died and the task was retried


@pytest.mark.slow
def test_the_sensitivity_sweep_on_ray_equals_the_local_sweep(ray_two_workers):
    from qcore.analysis.sensitivity import prepare, sweep

    p = prepare("fm_resnet", eval_size=1000)
    local = sweep(p)
    distributed = sweep(p, executor=ray_two_workers)
    assert distributed.executor == {"engine": "ray", "workers": 2, "address": "local"}
    assert local.executor == {"engine": "local", "workers": 1}
    assert [r.name for r in local.layers] == [r.name for r in distributed.layers]
    for a, b in zip(local.layers, distributed.layers):
        assert (a.only_this_quantized, a.all_but_this, a.sqnr_db, a.mse, a.cosine) == (
            b.only_this_quantized, b.all_but_this, b.sqnr_db, b.mse, b.cosine), a.name
    assert local.base_accuracy == distributed.base_accuracy


@pytest.mark.slow
def test_the_calibration_grid_on_ray_equals_the_local_grid(ray_two_workers):
    from qcore.analysis.experiments import calibration_study

    kwargs = {"methods": ("max", "entropy", "percentile:99.99"), "act_bits": (8, 4), "calib_size": 128, "eval_size": 300}
    local, _ = calibration_study("fm_resnet", **kwargs)
    distributed, _ = calibration_study("fm_resnet", executor=ray_two_workers, **kwargs)
    assert len(local.accuracy) == 6 and local.accuracy == distributed.accuracy
    assert local.ranges == distributed.ranges and local.layer_sqnr_db == distributed.layer_sqnr_db


def _counts_down(steps: int, progress=None, on_metric=None):
    """A job body for the Ray runner: progress and metric rows each step; returns where it ran."""
    import torch

    for i in range(steps):
        progress((i + 1) / steps, f"step {i + 1}")
        if on_metric is not None:
            on_metric({"step": i})
        time.sleep(0.2)
    return {"pid": os.getpid(), "threads": torch.get_num_threads()}


def _refuses(progress=None):
    raise ValueError("this model has nothing to quantize")


@pytest.mark.slow
def test_the_job_queue_runs_jobs_as_ray_tasks(ray_two_workers):
    """QX_EXECUTOR=ray: the same scheduler, the work in Ray workers; progress, metrics, results, errors and
    cancel cross over; a real engine job gives the local result."""
    from qcore.analysis.experiments import calibration_study
    from qcore.run.ray_jobs import RayRunner, make_runner
    from qcore.run.scheduler import Scheduler
    from qcore.zoo.models import load_model

    runner = RayRunner()  # the running local instance (2 CPUs)
    assert isinstance(make_runner("local"), type(Scheduler().runner))
    sched = Scheduler(runner=runner)
    assert (sched.limits.cores, sched.limits.slots) == (2, 2)
    job = sched.submit("count", _counts_down, {"steps": 5}, owner="a", metrics=True)
    endless = sched.submit("count", _counts_down, {"steps": 10_000}, owner="b")
    snap = job.wait(120)
    assert snap["status"] == "done", snap["error"]
    assert snap["result"]["pid"] != os.getpid() and snap["result"]["threads"] == 1
    assert [row["step"] for row in snap["metrics"]] == list(range(5)) and snap["progress"] == 1.0
    assert endless.snapshot()["status"] == "running"
    endless.cancel()
    assert endless.wait(30)["status"] == "cancelled"
    bad = sched.submit("bad", _refuses, owner="c", user_errors=(ValueError,)).wait(60)
    assert bad["status"] == "failed" and bad["error"] == "this model has nothing to quantize"
    kwargs = {"methods": ("max", "entropy"), "act_bits": (8,), "calib_size": 64, "eval_size": 200}
    loaded = load_model("fm_resnet")  # as the app passes it: the loaded model travels to the worker
    remote = sched.submit("calibration", calibration_study, {"model": loaded, **kwargs}, owner="d").wait(300)
    assert remote["status"] == "done", remote["error"]
    local, _ = calibration_study("fm_resnet", **kwargs)
    assert remote["result"][0].accuracy == local.accuracy
