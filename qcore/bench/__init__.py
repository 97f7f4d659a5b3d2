"""Benchmarks that write JSON: speed goals live here, not in timed unit tests.

    python -m qcore.bench calibrate [--model NAME] [--calib-size N] [--repeats R] [--out FILE.json]
    python -m qcore.bench latency --model NAME [--random-weights] [--batch 1] [--threads 2] --out FILE.json
    python -m qcore.bench recover [--eval-size N] [--models a,b] --out FILE.json
    python -m qcore.bench scale [--model NAME] [--eval-size 2000] --out FILE.json
    python -m qcore.bench memory [--model mobilenet_v2] [--images 64,256,1024] [--commands calibrate,deploy] --out F

`calibrate` times the one statistics pass (observers at every quantizer, histograms included)
against a plain FP32 forward pass over the same preprocessed images, interleaved R times in one
process with the same threads, and reports the median ratio (goal: at most 1.5x). It also times
turning those statistics into ranges for every method, which needs no further pass.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from qcore.runtime.machine import cpu_features

__all__ = ["bench_calibrate", "bench_latency", "bench_deploy", "bench_sensitivity", "main"]


def bench_calibrate(model: str | None = None, calib_size: int = 512, repeats: int = 5, seed: int = 0) -> dict:
    from qcore.analysis.experiments import timed_pass
    from qcore.quant.calibration import DEFAULT_METHODS, compute_ranges
    from qcore.quant.quantsim import QuantSim
    from qcore.zoo.inputs import prepare_inputs
    from qcore.zoo.models import DEFAULT_MODEL

    inp = prepare_inputs(model or DEFAULT_MODEL, calib_size=calib_size, eval_size=1, seed=seed)
    loaded, xs = inp.loaded, inp.calib_batches
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
    for method in DEFAULT_METHODS:
        start = time.perf_counter()
        scheme = sim.config.default.act_scheme()
        compute_ranges(sim.stats, method, scheme)
        methods[method] = round(time.perf_counter() - start, 4)
    return {
        "benchmark": "calibrate",
        "model": loaded.name,
        "calib_images": inp.calib_size,
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


def bench_latency(
    model: str | None = None, random_weights: bool = False, batch: int = 1, threads: int | None = None,
    iters: int = 50, warmup: int = 10, seed: int = 0, out_dir: str | None = None,
) -> dict:
    """FP32 (eager, ONNX Runtime) vs every static INT8 backend, interleaved, at one batch size."""
    import tempfile

    from qcore.quant.build import calibrated_sim
    from qcore.runtime.deploy import build_paths
    from qcore.zoo.inputs import prepare_inputs
    from qcore.runtime.latency import measure_interleaved
    from qcore.zoo.models import DEFAULT_MODEL
    from qcore.quant.qconfig import QuantConfig

    threads = threads or torch.get_num_threads()
    inp = prepare_inputs(model or DEFAULT_MODEL, None, 256, 1, seed, random_weights=random_weights)
    if random_weights:
        print("random weights: calibrating on random inputs; latency only, no accuracy", file=sys.stderr)
    loaded = inp.loaded
    sim = calibrated_sim(loaded.module, QuantConfig(), inp.calib_batches)
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_paths(loaded, sim, "auto", Path(out_dir or tmp), threads, variants=False)
        fp32, int8, notes = paths.fp32, paths.int8, paths.notes
        x = torch.randn(batch, *loaded.spec.input_shape, generator=torch.Generator().manual_seed(seed))
        timed = measure_interleaved({**{f"fp32:{n}": r.run for n, r in fp32.items()},
                                     **{f"int8:{n}": r.run for n, r in int8.items()}}, x, threads, warmup, iters)
    fp32_ms = {n.split(":", 1)[1]: t.median_ms for n, t in timed.items() if n.startswith("fp32:")}
    int8_ms = {n.split(":", 1)[1].replace("ort_u8s8", "ort"): t.median_ms for n, t in timed.items() if n.startswith("int8:")}
    fastest_fp32 = min(fp32_ms, key=fp32_ms.get)
    fastest_int8 = min(int8_ms, key=int8_ms.get)
    return {
        "benchmark": "latency",
        "model": loaded.name,
        "random_weights": random_weights,
        "note": "random weights: latency only, no accuracy" if random_weights else "trained weights",
        "batch": batch,
        "threads": threads,
        "iters": iters,
        "fp32_ms": fp32_ms,
        "int8_ms": int8_ms,
        "spread_ms": {n: {"p10": t.p10_ms, "p90": t.p90_ms} for n, t in timed.items()},
        "fastest_fp32": fastest_fp32,
        "fastest_int8": fastest_int8,
        "speedup_vs_fastest_fp32": round(fp32_ms[fastest_fp32] / int8_ms[fastest_int8], 3),
        "macs": loaded.macs,
        "notes": notes,
        "machine": cpu_features(),
    }


def bench_deploy(model: str | None = None, eval_size: int | None = None, iters: int = 30, seed: int = 0,
                 out_dir: str | None = None, imagenet: str | None = None) -> dict:
    """`deploy` end to end: wall time, seconds per stage and the headline numbers. The default model on the
    whole test set (goal: 60 s on a 2-core machine); with `imagenet` (a torchvision architecture), that model
    at 224x224 instead, with random weights whose BN statistics are its own, on 1000 images of a folder
    (`eval_size`; goal 180 s)."""
    import tempfile

    from qcore.runtime.deploy import deploy
    from qcore.zoo.models import DEFAULT_MODEL

    with tempfile.TemporaryDirectory() as tmp:
        kwargs, goal = {}, 60
        if imagenet:
            from qcore.bench.memory import calibrated_random_weights, image_folder
            from qcore.zoo.models import load_model

            eval_size, goal = eval_size or 1000, 180
            folder = image_folder(Path(tmp) / "images", eval_size)
            model = load_model(imagenet, weights=str(calibrated_random_weights(imagenet, Path(tmp) / "w.pt")))
            kwargs = {"data": f"imagefolder:{folder}"}
        start = time.perf_counter()
        report = deploy(model or DEFAULT_MODEL, out_dir=out_dir or Path(tmp) / "out", eval_size=eval_size, iters=iters,
                        seed=seed, **kwargs)
        wall = time.perf_counter() - start
    return {
        "benchmark": "deploy", "model": report.identity.model, "eval_images": report.eval_images, "wall_seconds": round(wall, 1),
        "goal_seconds": goal, "stage_seconds": report.stage_seconds, "backend": report.backend,
        "fp32_accuracy": report.fp32_accuracy, "simulation_accuracy": report.simulation_accuracy,
        "int8_accuracy": report.int8_accuracy, "agreement_with_simulation": report.agreement_with_simulation,
        "speedup_vs_fastest_fp32": report.speedup_vs_fastest_fp32, "weight_range": report.config["weight_range"],
        "notes": report.notes, "machine": cpu_features(),
    }


def bench_sensitivity(model: str | None = None, eval_size: int = 1000, seed: int = 0) -> dict:
    """The two-sided sweep of `python -m qcore sensitivity --eval-size 1000` (goal: under 30 s)."""
    from qcore.analysis.sensitivity import prepare, sweep
    from qcore.zoo.models import DEFAULT_MODEL

    start = time.perf_counter()
    p = prepare(model or DEFAULT_MODEL, eval_size=eval_size, seed=seed)
    prepared = time.perf_counter() - start
    report = sweep(p)
    return {"benchmark": "sensitivity", "model": report.identity.model, "eval_size": report.eval_size,
            "layers": len(report.layers), "sweep_seconds": report.seconds, "prepare_seconds": round(prepared, 1),
            "goal_seconds": 30, "base_accuracy": report.base_accuracy, "machine": cpu_features()}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qcore.bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calibrate", help="statistics pass vs plain FP32 pass")
    c.add_argument("--model", default=None)
    c.add_argument("--calib-size", type=int, default=512)
    c.add_argument("--repeats", type=int, default=5)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", default=None)
    lat = sub.add_parser("latency", help="FP32 vs INT8 latency, interleaved")
    lat.add_argument("--model", default=None)
    lat.add_argument("--random-weights", action="store_true",
                     help="random weights (torchvision models whose weights are not here): latency only")
    lat.add_argument("--batch", type=int, default=1)
    lat.add_argument("--threads", type=int, default=None)
    lat.add_argument("--iters", type=int, default=50)
    lat.add_argument("--seed", type=int, default=0)
    lat.add_argument("--out", default=None)
    d = sub.add_parser("deploy", help="deploy end to end on the whole test set: wall time and stages")
    d.add_argument("--model", default=None)
    d.add_argument("--eval-size", type=int, default=None)
    d.add_argument("--iters", type=int, default=30)
    d.add_argument("--imagenet", default=None,
                   help="a torchvision architecture at 224x224 (random weights, 1000 folder images) instead")
    d.add_argument("--out", default=None)
    s = sub.add_parser("sensitivity", help="the two-sided sensitivity sweep")
    s.add_argument("--model", default=None)
    s.add_argument("--eval-size", type=int, default=1000)
    s.add_argument("--out", default=None)
    r = sub.add_parser("recover", help="accuracy recovery steps vs round-to-nearest, full test set")
    r.add_argument("--eval-size", type=int, default=None)
    r.add_argument("--models", default=None, help="only these models, e.g. fm_resnet,fm_vit")
    r.add_argument("--out", default=None)
    sc = sub.add_parser("scale", help="the sensitivity sweep here and on Ray (1, 2 workers); ImageNet projection")
    sc.add_argument("--model", default="fm_resnet")
    sc.add_argument("--eval-size", type=int, default=2000)
    sc.add_argument("--out", default=None)
    ss = sub.add_parser("sessions", help="N sessions run calibration at once through the job queue")
    ss.add_argument("--sessions", type=int, default=4)
    ss.add_argument("--model", default=None)
    ss.add_argument("--calib-size", type=int, default=128)
    ss.add_argument("--eval-size", type=int, default=300)
    ss.add_argument("--same", action="store_true", help="identical requests (they share one computation)")
    ss.add_argument("--executor", default="local", help="local, ray, or a Ray cluster address")
    ss.add_argument("--out", default=None)
    m = sub.add_parser("memory", help="peak RSS of each command on a 224x224 model, by image count")
    m.add_argument("--model", default="mobilenet_v2", help="a torchvision architecture (random weights)")
    m.add_argument("--images", default="64,256,1024", help="image counts (calibration = evaluation = N)")
    m.add_argument("--commands", default=None, help="only these, e.g. calibrate,recover:gptq,deploy "
                   "(default: all; 'recover' is every recover run)")
    m.add_argument("--work", default=None, help="folder for the images, weights and logs (default: a temp folder)")
    m.add_argument("--out", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "memory":
        from qcore.bench.memory import COMMANDS, bench_memory

        wanted = args.commands.split(",") if args.commands else list(COMMANDS)
        unknown = [w for w in wanted if w not in COMMANDS and w not in {c.split(":")[0] for c in COMMANDS}]
        if unknown:  # a misspelt name would otherwise be dropped and the run would measure less than asked
            _parser().error(f"unknown command(s) {', '.join(unknown)}; choose from {', '.join(COMMANDS)} or recover")
        commands = tuple(c for c in COMMANDS if c in wanted or c.split(":")[0] in wanted)
        report = bench_memory(args.model, tuple(int(n) for n in args.images.split(",")), commands,
                              Path(args.work) if args.work else None, say=lambda line: print(line, file=sys.stderr))
    elif args.cmd == "sessions":
        from qcore.bench.sessions import bench_sessions

        report = bench_sessions(args.sessions, args.model, args.calib_size, args.eval_size, args.same, args.executor,
                                say=lambda line: print(line, file=sys.stderr))
    elif args.cmd == "scale":
        from qcore.bench.scale import bench_scale

        report = bench_scale(args.model, args.eval_size, say=lambda line: print(line, file=sys.stderr))
    elif args.cmd == "recover":
        from qcore.bench.recover import bench_recover

        report = bench_recover(args.eval_size, models=tuple(args.models.split(",")) if args.models else None,
                               say=lambda line: print(line, file=sys.stderr))
    elif args.cmd == "latency":
        report = bench_latency(args.model, args.random_weights, args.batch, args.threads, args.iters, seed=args.seed)
    elif args.cmd == "deploy":
        report = bench_deploy(args.model, args.eval_size, args.iters, imagenet=args.imagenet)
    elif args.cmd == "sensitivity":
        report = bench_sensitivity(args.model, args.eval_size)
    else:
        report = bench_calibrate(args.model, args.calib_size, args.repeats, args.seed)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0

