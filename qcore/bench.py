"""Benchmarks that write JSON: speed goals live here, not in timed unit tests.

    python -m qcore.bench calibrate [--model NAME] [--calib-size N] [--repeats R] [--out FILE.json]

`calibrate` times the one statistics pass (observers at every quantizer, histograms included)
against a plain FP32 forward pass over the same preprocessed images, interleaved R times in one
process with the same threads, and reports the median ratio (goal: at most 1.5x). It also times
turning those statistics into ranges for every method, which needs no further pass.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

__all__ = ["cpu_features", "bench_calibrate", "main"]


def cpu_features() -> dict:
    """CPU model and the ISA features that decide INT8 speed (from /proc/cpuinfo where present)."""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpu": model,
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "amx": "amx_int8" in flags,
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def bench_calibrate(model: str | None = None, calib_size: int = 512, repeats: int = 5, seed: int = 0) -> dict:
    from qcore.calibration import compute_ranges
    from qcore.data import calibration_subset
    from qcore.evaluate import batches
    from qcore.experiments import default_data, timed_pass
    from qcore.models import DEFAULT_MODEL, load_model
    from qcore.quantsim import QuantSim

    loaded = load_model(model or DEFAULT_MODEL)
    calib = calibration_subset(default_data(loaded), calib_size, seed)
    xs = list(batches(calib.images, loaded.spec.preprocess))
    sim = QuantSim(loaded.module)
    timed_pass(loaded.module, xs[:1])  # warm-up both paths once
    sim.collect_stats(xs[:1])
    fp32, stats = [], []
    for _ in range(repeats):
        fp32.append(timed_pass(loaded.module, xs))
        start = time.perf_counter()
        sim.collect_stats(xs)
        stats.append(time.perf_counter() - start)
    ratios = [s / f for s, f in zip(stats, fp32)]
    methods = {}
    for method in ("max", "percentile:99.99", "entropy", "mse"):
        start = time.perf_counter()
        scheme = sim.config.default.act_scheme()
        compute_ranges(sim.stats, method, scheme)
        methods[method] = round(time.perf_counter() - start, 4)
    return {
        "benchmark": "calibrate",
        "model": loaded.name,
        "calib_images": len(calib),
        "quantizers": len(sim.points),
        "repeats": repeats,
        "fp32_pass_seconds": [round(t, 4) for t in fp32],
        "stats_pass_seconds": [round(t, 4) for t in stats],
        "median_fp32_pass_seconds": round(statistics.median(fp32), 4),
        "median_stats_pass_seconds": round(statistics.median(stats), 4),
        "ratio_stats_vs_fp32": round(statistics.median(ratios), 3),
        "goal_ratio": 1.5,
        "range_seconds_per_method": methods,
        "machine": cpu_features(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qcore.bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calibrate", help="statistics pass vs plain FP32 pass")
    c.add_argument("--model", default=None)
    c.add_argument("--calib-size", type=int, default=512)
    c.add_argument("--repeats", type=int, default=5)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", default=None)
    args = p.parse_args(argv)
    report = bench_calibrate(args.model, args.calib_size, args.repeats, args.seed)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
