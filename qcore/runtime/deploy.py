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
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from qcore import release_free_memory
from qcore.analysis.evaluate import agreement, logits, scores, sqnr_db
from qcore.quant.progress import Msg, Progress, silent, span
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.quant.build import calibrated_sim
from qcore.runtime.backends import ort as ort_backend
from qcore.runtime.backends import x86 as x86_backend
from qcore.runtime.backends.common import Runner
from qcore.runtime.diagnose import diagnose
from qcore.runtime.isolated_check import isolated_report
from qcore.runtime.latency import measure_interleaved
from qcore.runtime.layer_check import check_layers, first_divergent
from qcore.runtime.machine import MACHINE_LOCK, cpu_features
from qcore.runtime.reports import DeployReport, Int8Graph, PathScore
from qcore.zoo.inputs import Inputs, prepare_inputs
from qcore.zoo.models import LoadedModel

__all__ = ["BACKENDS", "BuiltPaths", "build_paths", "deploy"]

BACKENDS = ("auto", "x86", "ort")


def _eager_runner(name: str, kind: str, module: torch.nn.Module, dtype: torch.dtype | None = None) -> Runner:
    model = module if dtype is None else copy.deepcopy(module).to(dtype)

    def run(x):
        with torch.no_grad():
            return model(x if dtype is None else x.to(dtype)).float()

    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return Runner(name, kind, run, size)


@dataclass
class BuiltPaths:
    """The runnable paths of one deploy: FP32 baselines, static INT8 backends, other variants
    (dynamic INT8, BF16/FP16), and notes on what was skipped and why."""

    fp32: dict[str, Runner]
    int8: dict[str, Runner]
    other: dict[str, Runner] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def everything(self) -> dict[str, Runner]:
        return {**self.fp32, **self.int8, **self.other}


def _int8_paths(sim: QuantSim, backend: str, shape, out_dir: Path, threads: int, say: Progress,
                notes: list[str]) -> dict[str, Runner]:
    int8: dict[str, Runner] = {}
    if backend in ("auto", "ort"):
        say(0.3, Msg("building ONNX Runtime INT8 (QDQ, U8S8 and S8S8)"))
        for acts in ("u8", "s8"):
            r = ort_backend.int8_runner(sim, shape, out_dir, threads, acts)
            int8[r.name] = r
    if backend in ("auto", "x86"):
        say(0.6, Msg("building PyTorch INT8 (torch.ao FX; x86 and oneDNN engines)"))
        try:
            for engine, name in (("x86", "x86"), ("onednn", "x86_onednn")):
                int8[name] = x86_backend.x86_runner(sim, shape, threads, engine)
                int8[name].name = name
        except ValueError as exc:
            if backend == "x86":
                raise
            notes.append(f"x86 skipped: {exc}")
    return int8


def _variant_paths(loaded: LoadedModel, fp32_onnx: Path, out_dir: Path, threads: int, notes: list[str]) -> dict[str, Runner]:
    """Dynamic INT8, and BF16/FP16 eager where the CPU has the instructions natively."""
    other = {"ort_dynamic": ort_backend.dynamic_runner(fp32_onnx, out_dir, threads),
             "x86_dynamic": x86_backend.dynamic_x86_runner(loaded.module, threads)}
    cpu = cpu_features()
    for name, dtype, flag in (("bf16_eager", torch.bfloat16, "bf16"), ("fp16_eager", torch.float16, "fp16")):
        if not cpu.get(flag):
            notes.append(f"{name} skipped: this CPU has no native {flag.upper()} instructions")
            continue
        try:
            runner = _eager_runner(name, flag, loaded.module, dtype)
            runner(torch.zeros(1, *loaded.spec.input_shape))
            other[name] = runner
        except RuntimeError as exc:
            notes.append(f"{name} skipped: {exc}")
    return other


def build_paths(loaded: LoadedModel, sim: QuantSim, backend: str, out_dir: Path, threads: int,
                progress: Progress | None = None, variants: bool = True) -> BuiltPaths:
    """FP32 paths, static INT8 paths and (with `variants`) dynamic INT8 and BF16/FP16 paths."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    say = progress or silent
    shape = loaded.spec.input_shape
    say(0.0, Msg("exporting FP32 ONNX"))
    fp32 = {"eager": _eager_runner("eager", "fp32", loaded.module),
            "ort": ort_backend.fp32_runner(loaded.module, shape, out_dir, threads)}
    fp32["ort"].name = "ort"
    paths = BuiltPaths(fp32, {})
    paths.int8 = _int8_paths(sim, backend, shape, out_dir, threads, say, paths.notes)
    if variants:
        say(0.9, Msg("building dynamic INT8 variants"))
        paths.other = _variant_paths(loaded, fp32["ort"].path, out_dir, threads, paths.notes)
    return paths


@dataclass
class Scored:
    """Every path's score, and the simulation's and FP32's own accuracy (full set)."""

    paths: dict[str, PathScore]
    sim_accuracy: float | None
    fp32_accuracy: float | None
    secondary_images: int


def _in_chunks(runner: Runner, chunk: int):
    """The runner fed at most `chunk` images per call where it compiles per batch size (a path timed at batch 32
    scores its evaluation batches 32 at a time instead of tracing and warming a copy for 250: fm_resnet's x86
    path scored 1250 images in 1.4 s instead of 2.7 s). Static INT8 outputs do not depend on the batch."""
    if not runner.shape_specialized:
        return runner

    def run(x: torch.Tensor) -> torch.Tensor:
        outs = []
        for part in x.split(chunk):
            n = len(part)
            if n < chunk and len(x) > chunk:  # a batch's remainder, padded to the compiled size (no new trace)
                part = torch.cat([part, part.new_zeros(chunk - n, *part.shape[1:])])
            outs.append(runner(part)[:n])
        return torch.cat(outs)

    return run


def _score_one(runner: Runner, xs: list[torch.Tensor], labels, sim_logits, fp32_logits, out=None,
               chunk: int = 32) -> PathScore:
    """One path: accuracy, top-1 agreement and logit SQNR against the simulation on `xs`."""
    out = logits(_in_chunks(runner, chunk), xs) if out is None else out
    n = len(out)
    sim, fp32 = sim_logits[:n], fp32_logits[:n]
    return PathScore(kind=runner.kind, size_bytes=runner.size_bytes,
                     agreement_with_simulation=agreement(out.argmax(1), sim.argmax(1)),
                     agreement_with_fp32=agreement(out.argmax(1), fp32.argmax(1)),
                     sqnr_db_vs_simulation=round(sqnr_db(sim, out), 2),
                     accuracy=scores(out, labels[:n]).top1 if labels is not None else None, images=n)


LOSER_IMAGES = 250  # a variant slower than FP32 at batch 1 cannot be the pick: scored on this many images


def losing_variants(paths: BuiltPaths, latency: dict, b: int) -> set[str]:
    """The variants (dynamic INT8, BF16/FP16) slower at batch `b` than the fastest FP32 path: they cannot win,
    so their accuracy is a sample's (ONNX Runtime's dynamic INT8 on a conv net without VNNI is 5x FP32)."""
    if f"batch_{b}" not in latency:
        return set()
    by_path, _ = _speedups(latency, b, paths.fp32, paths.other)
    return {n for n, speedup in by_path.items() if speedup < 1}


@torch.no_grad()
def _score_paths(paths: BuiltPaths, sim: QuantSim, inp: Inputs, headline: set[str], secondary_images: int | None,
                 say: Progress, losers: frozenset[str] = frozenset(), chunk: int = 32) -> Scored:
    """FP32, the simulation and the `headline` paths on the whole evaluation set; the other paths on
    its first `secondary_images` images (None: all), which is what makes a full-set deploy quick, and the
    `losers` (variants that cannot win) on the first LOSER_IMAGES of those. `chunk`: the largest batch size
    the paths were timed at (see _in_chunks)."""
    sim_logits, fp32_logits = logits(sim, inp.eval_batches), logits(inp.loaded.module, inp.eval_batches)
    total = len(sim_logits)
    few = total if secondary_images is None else min(total, secondary_images)
    subset = inp.eval_batches.first(few) if few < total else inp.eval_batches
    everything = paths.everything()
    scored = {}
    for i, (name, runner) in enumerate(everything.items()):
        say(i / len(everything), Msg("evaluating {path}", path=name))
        full = name in headline or name == "eager"
        xs = inp.eval_batches if full else (subset.first(LOSER_IMAGES) if name in losers else subset)
        scored[name] = _score_one(runner, xs, inp.labels, sim_logits, fp32_logits, chunk=chunk,
                                  out=fp32_logits if name == "eager" else None)  # eager FP32 is the FP32 run
        release_free_memory()  # what this path's runtime freed, before the next one allocates its own
    has_labels = inp.labels is not None
    return Scored(scored, scores(sim_logits, inp.labels).top1 if has_labels else None,
                  scores(fp32_logits, inp.labels).top1 if has_labels else None, few)


def _timing_input(inp: Inputs, b: int) -> torch.Tensor:
    """A batch of `b` evaluation images (repeated when there are fewer), or random ones."""
    if inp.labels is None:
        return torch.randn(b, *inp.loaded.spec.input_shape)
    x = inp.eval_head(b)
    return x.repeat((b + len(x) - 1) // len(x), 1, 1, 1)[:b] if len(x) < b else x


TIMING_BUDGET_S = 2.0  # seconds of timed calls per path and batch size; slow paths get fewer calls (MIN_TIMED)


def _time_paths(paths: BuiltPaths, inp: Inputs, batch_sizes, threads: int, warmup: int, iters: int,
                say: Progress, budget_s: float | None = TIMING_BUDGET_S) -> dict[str, dict[str, dict]]:
    """Every path timed interleaved at each batch size, while no other job uses the cores. The variants
    (dynamic INT8, BF16/FP16) are timed at the first batch size only: they are there to be compared with the
    static INT8 path deploy picks at that batch size, and on an ImageNet model each of their batch-32 calls
    takes a second."""
    latency = {}
    for i, b in enumerate(batch_sizes):
        timed_here = paths.everything() if i == 0 else {**paths.fp32, **paths.int8}
        part = span(say, i / len(batch_sizes), (i + 1) / len(batch_sizes))
        part(0.0, Msg("timing {n} paths at batch {batch} (up to {iters} interleaved calls each)", n=len(timed_here),
                       batch=b, iters=iters))
        with MACHINE_LOCK:  # never time while another job (training, another deploy) uses the cores
            timed = measure_interleaved({n: r.run for n, r in timed_here.items()}, _timing_input(inp, b), threads,
                                        warmup, iters, progress=lambda f, msg, b=b: part(
                                            f, Msg("batch {batch}: {detail}", batch=b, detail=msg)),
                                        budget_s=budget_s)
        latency[f"batch_{b}"] = {n: t.to_dict() for n, t in timed.items()}
        release_free_memory()
    return latency


def _speedups(latency: dict, b: int, fp32_paths, others) -> tuple[dict[str, float], str]:
    """Speedup of every non-FP32 path at batch `b` over the fastest FP32 path, and that path."""
    t = latency[f"batch_{b}"]
    fastest = min(fp32_paths, key=lambda n: t[n]["median_ms"])
    return {n: round(t[fastest]["median_ms"] / t[n]["median_ms"], 3) for n in others if n in t}, fastest


def _fastest_int8(latency: dict, b: int, paths: BuiltPaths) -> str | None:
    """The static INT8 backend with the best speedup at batch `b` (the one deploy picks)."""
    by_path, _ = _speedups(latency, b, paths.fp32, paths.int8)
    return max(paths.int8, key=lambda n: by_path[n]) if paths.int8 else None


def _report(inp: Inputs, sim: QuantSim, paths: BuiltPaths, result: Scored, latency: dict, batch_sizes,
            threads: int, iters: int) -> DeployReport:
    """The report: the fastest INT8 backend at the first batch size, and every path's numbers."""
    others = {**paths.int8, **paths.other}
    by_path, fastest_fp32 = _speedups(latency, batch_sizes[0], paths.fp32, others)
    best = _fastest_int8(latency, batch_sizes[0], paths)
    scored, sim_acc, fp32_acc = result.paths, result.sim_accuracy, result.fp32_accuracy
    chosen = scored[best] if best else None
    config = sim.config
    return DeployReport(
        identity=inp.run_identity(), inventory=sim.layer_inventory(), random_weights=inp.labels is None, backend=best, config=config.to_dict(),
        int8_scheme=config.weight_range_note(),
        fp32_accuracy=fp32_acc, simulation_accuracy=sim_acc, int8_accuracy=chosen.accuracy if chosen else None,
        agreement_with_simulation=chosen.agreement_with_simulation if chosen else None,
        logit_sqnr_db_vs_simulation=chosen.sqnr_db_vs_simulation if chosen else None,
        eval_images=inp.eval_size, paths=scored, latency_ms=latency, fastest_fp32=fastest_fp32,
        speedup_vs_fastest_fp32=by_path.get(best) if best else None, speedup_by_path=by_path,
        speedup_vs_fastest_fp32_by_batch={str(b): _speedups(latency, b, paths.fp32, others)[0].get(best)
                                          for b in batch_sizes} if best else {},
        best_int8=best,
        int8_paths={n: Int8Graph(r.transitions, r.float_ops, r.ops, r.notes) for n, r in paths.int8.items()},
        size_bytes={n: r.size_bytes for n, r in paths.everything().items()}, macs=inp.loaded.macs, threads=threads,
        iters=iters, machine={**cpu_features(), "quantized_engine": torch.backends.quantized.engine,
                              "reduce_range": config.reduce_range, "weight_range": config.weight_range},
        notes=paths.notes)


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
    secondary_images: int | None = 2000,
    progress: Progress | None = None,
) -> DeployReport:
    """Build, check, time and export real INT8 models; returns (and writes) report.json."""
    say = progress or silent
    threads = threads or torch.get_num_threads()
    start_all = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = config or QuantConfig()
    clock = Stages()
    say(0.0, Msg("loading model and data"))
    with clock("inputs"):
        inp = prepare_inputs(model, data, calib_size, eval_size, seed, weights, random_weights)
    if random_weights:
        say(0.01, Msg("random weights: calibrating on random inputs; latency only, no accuracy"))
    say(0.02, Msg("calibrating (one statistics pass)"))
    with clock("calibrate"):
        sim = calibrated_sim(inp.loaded.module, config, inp.calib_batches)
    with clock("build"):
        paths = build_paths(inp.loaded, sim, backend, out_dir, threads, span(say, 0.05, 0.3))
    if sim.unsupported_note():
        paths.notes.append(sim.unsupported_note())
    with clock("time"):
        latency = _time_paths(paths, inp, batch_sizes, threads, warmup, iters, span(say, 0.3, 0.7))
    best = _fastest_int8(latency, batch_sizes[0], paths)
    say(0.7, Msg("evaluating every path"))
    losers = frozenset(losing_variants(paths, latency, batch_sizes[0]))
    with clock("score"):
        result = _score_paths(paths, sim, inp, {best}, sample_size(secondary_images, inp.loaded.macs),
                              span(say, 0.7, 0.95), losers, chunk=max(batch_sizes))
    report = _report(inp, sim, paths, result, latency, batch_sizes, threads, iters)
    report.notes += _sample_notes(report, result, best, losers, batch_sizes[0])
    with clock("layer check"):
        report.layer_check = _layer_check(sim, paths, inp, best)
    report.diagnosis = diagnose(report)
    with clock("export"):
        report.files = _export(paths.int8, out_dir)
    report.out_dir = str(out_dir)
    report.stage_seconds = clock.seconds
    report.seconds = round(time.perf_counter() - start_all, 1)
    (out_dir / "report.json").write_text(report.to_json())
    return report


def _sample_notes(report: DeployReport, result: Scored, best: str | None, losers: frozenset[str], b: int) -> list[str]:
    """What the report's notes say about the paths scored on fewer images than the whole evaluation set."""
    notes = []
    if result.secondary_images < report.eval_images:
        notes.append(f"FP32, the simulation and {best} scored on all {report.eval_images} images; the other "
                     f"paths on the first {result.secondary_images}")
    if losers:
        notes.append(f"{', '.join(sorted(losers))}: slower than FP32 at batch {b}, so it cannot be the pick; "
                     f"scored on the first {min(LOSER_IMAGES, result.secondary_images)} images only")
    return notes


SAMPLE_MACS = 1e11  # multiply-adds a path other than the headline ones is scored with: about 330 ImageNet images


def sample_size(secondary_images: int | None, macs: int) -> int | None:
    """Images the paths other than FP32, the simulation and the chosen INT8 path are scored on: at most
    `secondary_images` (None: all), and no more than SAMPLE_MACS of work (at least 100 images), so an
    ImageNet model's eight paths are not each run over the whole evaluation set."""
    by_cost = max(100, int(SAMPLE_MACS / max(1, macs)))
    return by_cost if secondary_images is None else min(secondary_images, by_cost)


class Stages:
    """Seconds per named stage: `with clock("build"): ...` adds to clock.seconds["build"]."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 2)


def _layer_check(sim: QuantSim, paths: BuiltPaths, inp: Inputs, best: str | None, images: int = 8) -> dict | None:
    """The per-layer comparison of ONNX Runtime's INT8 model with the simulation on a few images
    (see runtime.layer_check), as plain data for the report; None without an ORT INT8 model."""
    runner = paths.int8.get("ort_u8s8")
    if runner is None or runner.path is None:
        return None
    x = inp.eval_head(images)
    isolated = isolated_report(sim, runner.path, x[:1])  # each op fed the sim's own integers: names the op
    try:
        checks = check_layers(sim, runner.path, x)
    except Exception as exc:  # a diagnostic: its failure is reported, never the end of a finished deploy
        return {"path": runner.name, "error": f"{type(exc).__name__}: {exc}", "isolated": isolated}
    first = first_divergent(checks)
    return {"path": runner.name, "images": images, "first_divergent": first.name if first else None,
            "layers": [asdict(c) for c in checks], "isolated": isolated}


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
