"""Deploy: a calibrated config -> real INT8 models, their accuracy, agreement and measured latency.

The same QuantSim (calibrated once, with the user's method and per-layer choices) feeds every
INT8 backend, so all of them run the grids the simulation used. Then:
- accuracy of each path on the evaluation set, top-1 agreement and logit SQNR against the sim;
- latency of every path (FP32 eager, FP32 ONNX Runtime, each INT8 backend, dynamic INT8, and
  BF16/FP16 where the CPU has the instructions), interleaved in one process, batch 1 and a
  larger batch; the speedup is against the fastest FP32 path;
- the fastest INT8 backend is picked; files are exported; `diagnose` explains slow INT8.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable

import torch

from qcore.runtime.backends import ort as ort_backend
from qcore.runtime.backends import x86 as x86_backend
from qcore.runtime.backends.common import Runner
from qcore.runtime.machine import cpu_features
from qcore.zoo.data import calibration_subset, eval_subset
from qcore.runtime.diagnose import diagnose
from qcore.analysis.evaluate import DEFAULT_BATCH, EvalResult, batches, sqnr_db
from qcore.analysis.experiments import check_compatible, default_data, run_identity
from qcore.runtime.machine import MACHINE_LOCK
from qcore.runtime.latency import measure_interleaved
from qcore.zoo.models import LoadedModel, finish_loading, get_spec, load_model
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim

__all__ = ["BACKENDS", "build_paths", "deploy", "calibrated_sim", "prepare_inputs"]

BACKENDS = ("auto", "x86", "ort")


def calibrated_sim(loaded: LoadedModel, config: QuantConfig, calib_batches: list[torch.Tensor]) -> QuantSim:
    sim = QuantSim(loaded.module, config)
    sim.collect_stats(calib_batches)
    sim.apply_ranges()
    return sim


def _eager_runner(name: str, kind: str, module: torch.nn.Module, dtype: torch.dtype | None = None) -> Runner:
    model = module if dtype is None else copy.deepcopy(module).to(dtype)

    def run(x):
        with torch.no_grad():
            return model(x if dtype is None else x.to(dtype)).float()

    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return Runner(name, kind, run, size)


def build_paths(
    loaded: LoadedModel, sim: QuantSim, backend: str, out_dir: Path, threads: int, say: Callable[[str], None],
    variants: bool = True,
) -> tuple[dict[str, Runner], dict[str, Runner], dict[str, Runner], list[str]]:
    """FP32 paths, static INT8 paths and other variants (dynamic, bf16, fp16), plus skip notes."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    shape = loaded.spec.input_shape
    notes: list[str] = []
    say("exporting FP32 ONNX")
    fp32 = {"eager": _eager_runner("eager", "fp32", loaded.module),
            "ort": ort_backend.fp32_runner(loaded.module, shape, out_dir, threads)}
    fp32["ort"].name = "ort"
    int8: dict[str, Runner] = {}
    if backend in ("auto", "ort"):
        say("building ONNX Runtime INT8 (QDQ, U8S8 and S8S8)")
        for acts in ("u8", "s8"):
            r = ort_backend.int8_runner(sim, shape, out_dir, threads, acts)
            int8[r.name] = r
    if backend in ("auto", "x86"):
        say("building PyTorch INT8 (torch.ao FX; x86 and oneDNN engines)")
        try:
            for engine, name in (("x86", "x86"), ("onednn", "x86_onednn")):
                int8[name] = x86_backend.x86_runner(sim, shape, threads, engine)
                int8[name].name = name
            torch.backends.quantized.engine = "x86"  # the default again; built models keep their own kernels
        except ValueError as exc:
            if backend == "x86":
                raise
            notes.append(f"x86 skipped: {exc}")
    other: dict[str, Runner] = {}
    if not variants:
        return fp32, int8, other, notes
    say("building dynamic INT8 variants")
    other["ort_dynamic"] = ort_backend.dynamic_runner(fp32["ort"].path, out_dir, threads)
    other["x86_dynamic"] = x86_backend.dynamic_x86_runner(loaded.module, threads)
    cpu = cpu_features()
    for name, dtype, flag in (("bf16_eager", torch.bfloat16, "bf16"), ("fp16_eager", torch.float16, "fp16")):
        if not cpu.get(flag):
            notes.append(f"{name} skipped: this CPU has no native {flag.upper()} instructions")
            continue
        try:
            runner = _eager_runner(name, flag, loaded.module, dtype)
            runner(torch.zeros(1, *shape))
            other[name] = runner
        except RuntimeError as exc:
            notes.append(f"{name} skipped: {exc}")
    return fp32, int8, other, notes


@torch.no_grad()
def _logits(runner: Callable, xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([runner(x) for x in xs])


def _scores(logits: torch.Tensor, labels: torch.Tensor | None) -> EvalResult | None:
    if labels is None:
        return None
    k = min(5, logits.shape[1])
    top = logits.topk(k, 1).indices
    n = len(labels)
    return EvalResult(float((top[:, 0] == labels).float().mean()), float((top == labels[:, None]).any(1).float().mean()),
                      top[:, 0], n)


def prepare_inputs(model, random_weights, data, calib_size, eval_size, seed, weights, say):
    """The model and its calibration/evaluation batches (random ones for random-weight latency runs)."""
    if isinstance(model, LoadedModel):
        loaded = model
    elif random_weights:
        torch.manual_seed(seed)
        spec = get_spec(model)
        loaded = finish_loading(spec, spec.build(), {"weights": "random (latency only)"})
    else:
        loaded = load_model(model, weights=weights)
    shape = loaded.spec.input_shape
    if random_weights:
        say("random weights: calibrating on random inputs; latency only, no accuracy")
        g = torch.Generator().manual_seed(seed)
        calib_batches = [torch.randn(8, *shape, generator=g) for _ in range(4)]
        return loaded, calib_batches, calib_batches[:1], None, None
    data_name = data or default_data(loaded)
    calib = calibration_subset(data_name, calib_size, seed)
    evald = eval_subset(data_name, eval_size, seed)
    check_compatible(loaded, evald)
    pre = loaded.spec.preprocess
    return loaded, list(batches(calib.images, pre)), list(batches(evald.images, pre, DEFAULT_BATCH)), evald.labels, data_name


def deploy(
    model: str | LoadedModel = "fm_resnet",
    config: QuantConfig | None = None,
    backend: str = "auto",
    out_dir: str | Path = "out/deploy",
    data: str | None = None,
    calib_size: int = 512,
    eval_size: int | None = None,
    seed: int = 0,
    batch_sizes: tuple[int, ...] = (1, 32),
    threads: int | None = None,
    iters: int = 30,
    warmup: int = 5,
    weights: str | None = None,
    random_weights: bool = False,
    progress: Callable[..., None] | None = None,
) -> dict:
    """Build, check, time and export real INT8 models; returns (and writes) report.json."""
    say = progress or (lambda msg, fraction=None: None)
    threads = threads or torch.get_num_threads()
    start_all = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = config or QuantConfig()
    loaded, calib_batches, eval_batches, labels, data_name = prepare_inputs(
        model, random_weights, data, calib_size, eval_size, seed, weights, say
    )
    shape = loaded.spec.input_shape

    say("calibrating (one statistics pass)", 0.02)
    sim = calibrated_sim(loaded, config, calib_batches)
    fp32_paths, int8_paths, other_paths, notes = build_paths(loaded, sim, backend, out_dir, threads, say)
    if sim.unsupported_note():
        notes.append(sim.unsupported_note())

    say("evaluating every path", 0.3)
    sim_logits = _logits(sim, eval_batches)
    fp32_logits = _logits(loaded.module, eval_batches)
    sim_eval, fp32_eval = _scores(sim_logits, labels), _scores(fp32_logits, labels)
    paths_report = {}
    everything = {**fp32_paths, **int8_paths, **other_paths}
    for name, runner in everything.items():
        say(f"evaluating {name}", 0.3 + 0.2 * len(paths_report) / len(everything))
        logits = _logits(runner, eval_batches)
        entry = {
            "kind": runner.kind,
            "size_bytes": runner.size_bytes,
            "agreement_with_simulation": float((logits.argmax(1) == sim_logits.argmax(1)).float().mean()),
            "agreement_with_fp32": float((logits.argmax(1) == fp32_logits.argmax(1)).float().mean()),
            "sqnr_db_vs_simulation": round(sqnr_db(sim_logits, logits), 2),
        }
        scored = _scores(logits, labels)
        if scored is not None:
            entry["accuracy"] = scored.top1
        paths_report[name] = entry

    latency: dict[str, dict] = {}
    for i, b in enumerate(batch_sizes):
        share = 0.5 / len(batch_sizes)
        say(f"timing {len(everything)} paths at batch {b} ({iters} interleaved calls each)", 0.5 + i * share)
        x = torch.cat(eval_batches)[:b] if not random_weights else torch.randn(b, *shape)
        if len(x) < b:
            x = x.repeat((b + len(x) - 1) // len(x), 1, 1, 1)[:b]
        with MACHINE_LOCK:  # never time while another job (training, another deploy) uses the cores
            timed = measure_interleaved(
                {n: r.run for n, r in everything.items()}, x, threads, warmup, iters,
                progress=lambda f, b=b, base=0.5 + i * share: say(f"timing batch {b}: {round(f * iters)}/{iters} calls",
                                                                   base + f * share),
            )
        latency[f"batch_{b}"] = {n: t.to_dict() for n, t in timed.items()}

    def speedups(b: int) -> dict[str, float]:
        t = latency[f"batch_{b}"]
        fastest = min(fp32_paths, key=lambda n: t[n]["median_ms"])
        return {n: round(t[fastest]["median_ms"] / t[n]["median_ms"], 3) for n in {**int8_paths, **other_paths}}, fastest

    b1 = batch_sizes[0]
    by_path, fastest_fp32 = speedups(b1)
    best = max(int8_paths, key=lambda n: by_path[n]) if int8_paths else None
    report = {
        **run_identity(loaded, data_name, seed, calib_size),
        "random_weights": random_weights,
        "backend": best,
        "config": config.to_dict(),
        "fp32_accuracy": fp32_eval.top1 if fp32_eval else None,
        "simulation_accuracy": sim_eval.top1 if sim_eval else None,
        "int8_accuracy": paths_report[best].get("accuracy") if best else None,
        "agreement_with_simulation": paths_report[best]["agreement_with_simulation"] if best else None,
        "logit_sqnr_db_vs_simulation": paths_report[best]["sqnr_db_vs_simulation"] if best else None,
        "eval_images": int(sum(len(x) for x in eval_batches)),
        "paths": paths_report,
        "latency_ms": latency,
        "fastest_fp32": fastest_fp32,
        "speedup_vs_fastest_fp32": by_path.get(best) if best else None,
        "speedup_by_path": by_path,
        "speedup_vs_fastest_fp32_by_batch": {str(b): speedups(b)[0].get(best) for b in batch_sizes} if best else {},
        "best_int8": best,
        "int8_paths": {n: {"transitions": r.transitions, "float_ops": r.float_ops, "ops": r.ops, "notes": r.notes}
                       for n, r in int8_paths.items()},
        "size_bytes": {n: r.size_bytes for n, r in everything.items()},
        "macs": loaded.macs,
        "threads": threads,
        "iters": iters,
        "machine": {**cpu_features(), "quantized_engine": torch.backends.quantized.engine,
                    "reduce_range": config.reduce_range},
        "notes": notes,
    }
    report["diagnosis"] = diagnose(report)
    files = _export(int8_paths, out_dir)
    report["files"] = files
    report["out_dir"] = str(out_dir)
    report["seconds"] = round(time.perf_counter() - start_all, 1)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _export(int8_paths: dict[str, Runner], out_dir: Path) -> list[str]:
    """Keep the U8S8 ONNX file as model_int8.onnx and save the x86 model as TorchScript."""
    files = []
    u8 = int8_paths.get("ort_u8s8")
    if u8 is not None and u8.path is not None:
        target = out_dir / "model_int8.onnx"
        u8.path.replace(target)
        u8.path = target
        files.append(target.name)
    x86 = int8_paths.get("x86")
    if x86 is not None and x86.artifact is not None:
        target = out_dir / "model_int8_x86.pt"
        x86_backend.save_torchscript(x86.artifact, target)
        files.append(target.name)
    files.append("report.json")
    return files
