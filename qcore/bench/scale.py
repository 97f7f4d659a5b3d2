"""`python -m qcore.bench scale`: the sensitivity sweep's wall time here and on Ray (1 and 2 workers), and
the ImageNet-scale projection from measured per-image costs.

Measured in one process on this machine: the local sweep (this process's threads), then the same sweep on
a local Ray instance with 1 and then 2 worker CPUs (each started fresh and warmed up with a no-op task so
start-up is not counted), Ray's per-task overhead (no-op tasks), and the time of putting the sweep's shared
state into the object store. The numbers of every run are checked equal to the local run's.

The projection times a ResNet50 (torchvision architecture, random weights: the cost of a forward pass does
not depend on the values) fake-quant forward per 224x224 image on one thread, counts its quantizable layers
L, and applies the sweep's own cost model: 1 + 2L evaluations of 50,000 images, reduced by the prefix-reuse
factor measured on the local fm_resnet sweep above, split into (side, batch of 500) items over N workers.
"""

from __future__ import annotations

import math
import time

import torch

from qcore.analysis.sensitivity import SweepWork, evaluate_config, prepare, sweep
from qcore.quant.quantsim import QuantSim
from qcore.runtime.machine import cpu_features

__all__ = ["bench_scale"]


def _noop(shared, item):
    return item


def _same(a, b) -> bool:
    return all((x.only_this_quantized, x.all_but_this, x.sqnr_db) == (y.only_this_quantized, y.all_but_this, y.sqnr_db)
               for x, y in zip(a.layers, b.layers))


def _ray_run(p, workers: int, local) -> dict:
    import pickle

    import ray

    from qcore.run.executors import RayExecutor

    ray.shutdown()
    ex = RayExecutor(workers=workers)
    ex.map(_noop, None, list(range(workers)))  # start the workers before timing
    start = time.perf_counter()
    ex.map(_noop, None, list(range(50)))
    per_task_ms = (time.perf_counter() - start) / 50 * 1e3
    start = time.perf_counter()
    report = sweep(p, executor=ex)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    ray.put(SweepWork.of(p))
    put_s = time.perf_counter() - start
    size_mb = len(pickle.dumps(SweepWork.of(p))) / 1e6
    ray.shutdown()
    return {"workers": workers, "sweep_seconds": round(seconds, 2), "same_numbers_as_local": _same(local, report),
            "noop_task_ms": round(per_task_ms, 2), "object_store_put_seconds": round(put_s, 3),
            "shared_state_mb": round(size_mb, 1)}


def _resnet50_image_seconds(batch: int = 4) -> tuple[float, int]:
    """Seconds per 224x224 image of a fake-quant ResNet50 forward on one thread, and its quantizable layers."""
    import torchvision

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = torchvision.models.resnet50(weights=None).eval()
        x = torch.randn(batch, 3, 224, 224)
        sim = QuantSim(model)
        sim.collect_stats([x])
        sim.apply_ranges()
        with torch.no_grad():
            sim(x)  # warm-up
            start = time.perf_counter()
            sim(x)
            seconds = (time.perf_counter() - start) / batch
        return seconds, len(sim.layer_names())
    finally:
        torch.set_num_threads(threads)


def _projection(image_s: float, layers: int, prefix_factor: float, images: int = 50_000, batch: int = 500) -> dict:
    evaluations = 1 + 2 * layers
    one_core_h = evaluations * images * image_s * prefix_factor / 3600
    items = 2 * math.ceil(images / batch)
    item_s = one_core_h * 3600 / items
    return {"model": "resnet50 (224x224)", "images": images, "quantizable_layers": layers,
            "image_evaluations": evaluations * images, "fake_quant_seconds_per_image_1_thread": round(image_s, 4),
            "prefix_reuse_factor": round(prefix_factor, 3), "hours_on_one_core": round(one_core_h, 1),
            "hours_on_this_2_core_machine": round(one_core_h / 2, 1), "items": items,
            "minutes_on_workers": {str(n): round(math.ceil(items / n) * item_s / 60, 1) for n in (8, 32, 100, 200)}}


def bench_scale(model: str = "fm_resnet", eval_size: int = 2000, say=print) -> dict:
    p = prepare(model, eval_size=eval_size)
    start = time.perf_counter()
    evaluate_config(p, p.base_config)
    full_eval_s = time.perf_counter() - start
    start = time.perf_counter()
    local = sweep(p)
    local_s = time.perf_counter() - start
    say(f"local sweep: {local_s:.1f} s ({torch.get_num_threads()} threads)")
    ray_runs = []
    for workers in (1, 2):
        ray_runs.append(_ray_run(p, workers, local))
        say(f"ray, {workers} worker(s): {ray_runs[-1]['sweep_seconds']:.1f} s")
    prefix = local_s / ((1 + 2 * len(local.layers)) * full_eval_s)
    image_s, layers = _resnet50_image_seconds()
    return {"benchmark": "scale", "model": model, "eval_size": eval_size, "layers": len(local.layers),
            "items": 2 * len(p.xs), "local": {"threads": torch.get_num_threads(), "sweep_seconds": round(local_s, 2),
                                              "full_evaluation_seconds": round(full_eval_s, 3)},
            "ray": ray_runs, "speedup_2_vs_1_ray_workers": round(ray_runs[0]["sweep_seconds"] / ray_runs[1]["sweep_seconds"], 2),
            "projection": _projection(image_s, layers, prefix), "machine": cpu_features()}
