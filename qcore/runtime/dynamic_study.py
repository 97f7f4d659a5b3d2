"""Dynamic INT8 against static INT8 and FP32: the Learn page's experiment (the kernels come from the backends:
torch.ao's `quantize_dynamic` is called in backends/x86.py only, where every torch.ao call lives).

Dynamic quantization stores int8 weights and quantizes each activation at run time from that
batch's own range: no calibration, but torch has dynamic kernels only for Linear (and RNN) layers,
so a convolutional net keeps almost everything in float. Static INT8 is the calibrated QuantSim
run on real integer kernels (torch x86, or ONNX Runtime U8S8 where x86 cannot take the graph, as
with attention). All three run interleaved in one process with the same threads (`measure_interleaved`),
so the measured difference is the kernels', not the machine's mood.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from qcore.analysis.evaluate import logits, scores
from qcore.analysis.learn_topics import DynamicStaticReport, linear_mac_share
from qcore.quant.progress import Msg, Progress, silent
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.quant.build import calibrated_sim
from qcore.runtime.backends import ort as ort_backend
from qcore.runtime.backends import x86 as x86_backend
from qcore.runtime.backends.common import Runner
from qcore.runtime.backends.x86 import quantize_linear_dynamic
from qcore.runtime.latency import measure_interleaved
from qcore.runtime.machine import MACHINE_LOCK
from qcore.zoo.inputs import prepare_inputs
from qcore.zoo.models import LoadedModel

__all__ = ["quantize_linear_dynamic", "dynamic_runner", "dynamic_vs_static"]


def dynamic_runner(model: nn.Module) -> tuple[Runner, list[str]]:
    """The dynamic INT8 model as a Runner, and which layers it quantized."""
    qmodel, changed = quantize_linear_dynamic(model)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return qmodel(x)

    return Runner("dynamic_int8", "dynamic", run), changed


def _static_runner(sim: QuantSim, shape, out_dir: Path, threads: int) -> Runner:
    """torch x86 INT8 from the sim; ONNX Runtime U8S8 where x86 cannot take the graph (attention)."""
    try:
        runner = x86_backend.x86_runner(sim, shape, threads)
    except ValueError as exc:
        runner = ort_backend.int8_runner(sim, shape, out_dir, threads, "u8")
        runner.notes.append(f"torch x86 could not take this graph ({str(exc)[:120]}); ONNX Runtime U8S8 used")
    return runner


def _fp32_runner(module: nn.Module) -> Runner:
    def run(x):
        with torch.no_grad():
            return module(x)

    return Runner("fp32", "fp32", run)


def dynamic_vs_static(model: str | LoadedModel, data: str | None = None, calib_size: int = 256, eval_size: int = 1000,
                      seed: int = 0, threads: int | None = None, iters: int = 30, batch: int = 1,
                      progress: Progress | None = None) -> DynamicStaticReport:
    """Accuracy and batch-`batch` latency of FP32, dynamic INT8 (Linear layers) and static INT8 (W8A8,
    per-channel weights, calibrated on `calib_size` images), interleaved, median of `iters` calls."""
    say = progress or silent
    threads = threads or torch.get_num_threads()
    say(0.0, Msg("loading images"))
    inp = prepare_inputs(model, data, calib_size, eval_size, seed)
    module, shape = inp.loaded.module, inp.loaded.spec.input_shape
    say(0.1, Msg("calibrating static INT8 (W8A8)"))
    sim = calibrated_sim(module, QuantConfig(), inp.calib_batches)
    with tempfile.TemporaryDirectory() as tmp:
        static = _static_runner(sim, shape, Path(tmp), threads)
        dynamic, changed = dynamic_runner(module)
        runners = {"fp32": _fp32_runner(module), "dynamic_int8": dynamic, "static_int8": static}
        accuracy = {}
        for i, (name, r) in enumerate(runners.items()):
            say(0.2 + 0.15 * i, Msg("evaluating {path} on {n} images", path=name, n=inp.eval_size))
            accuracy[name] = scores(logits(r, inp.eval_batches), inp.labels).top1
        x = inp.eval_head(batch)
        with MACHINE_LOCK:
            timed = measure_interleaved({n: r.run for n, r in runners.items()}, x, threads, iters=iters,
                                        progress=lambda f, msg: say(0.65 + 0.35 * (f or 0), msg))
    linears = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    convs = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    say(1.0, Msg("done"))
    return DynamicStaticReport(
        model=inp.loaded.name, eval_images=inp.eval_size, threads=threads, batch=batch, accuracy=accuracy,
        latency_ms={n: t.median_ms for n, t in timed.items()}, dynamic_layers=changed, linear_layers=linears,
        conv_layers=len(convs), linear_mac_share=linear_mac_share(module, shape), static_backend=static.name,
        notes=list(static.notes))
