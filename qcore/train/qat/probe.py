"""Measurements taken during QAT: the real INT8 model built from the sim as it is now, and the cost
of a fake-quant training step against a FP32 one."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qcore.quant.progress import Msg, Progress
from qcore.quant.quantsim import QuantSim
from qcore.runtime.backends import ort as ort_backend
from qcore.runtime.latency import measure_interleaved
from qcore.runtime.machine import MACHINE_LOCK
from qcore.zoo.models import LoadedModel

__all__ = ["Int8Probe", "train_step", "step_overhead"]


def train_step(model, opt, x, y, label_smoothing: float = 0.0) -> float:
    loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_overhead(fp32_model: torch.nn.Module, sim: QuantSim, x: torch.Tensor, y: torch.Tensor,
                  repeats: int = 10, warmup: int = 3) -> dict:
    """Median time of one training step, plain FP32 vs fake-quant, interleaved on copies of both, on the
    device the steps will run on (x's): the step count for a time budget comes from this figure.

    The FP32 step trains the original (unfolded BN, train mode) model; the QAT step trains the sim.
    """
    device = x.device
    models = {"fp32": copy.deepcopy(fp32_model).to(device).train(), "qat": copy.deepcopy(sim).to(device).train()}
    for m in models.values():
        for p in m.parameters():
            p.requires_grad_(True)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-6) for k, m in models.items()}
    times: dict[str, list[float]] = {"fp32": [], "qat": []}
    with MACHINE_LOCK:
        for i in range(warmup + repeats):
            for name in (("fp32", "qat") if i % 2 == 0 else ("qat", "fp32")):
                _synchronize(device)
                start = time.perf_counter()
                train_step(models[name], opts[name], x, y)  # returns float(loss): waits for the GPU
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"fp32_step_s": round(med["fp32"], 6), "qat_step_s": round(med["qat"], 6),
            "ratio": round(med["qat"] / med["fp32"], 3), "batch": len(x), "device": str(device)}


class Int8Probe:
    """Builds the real INT8 model (ONNX Runtime U8S8) from the sim, scores it and times it against
    ONNX Runtime FP32, interleaved."""

    def __init__(self, loaded: LoadedModel, out_dir: Path, threads: int, iters: int):
        self.shape = loaded.spec.input_shape
        self.out_dir, self.threads, self.iters = out_dir, threads, iters
        self.fp32 = ort_backend.fp32_runner(loaded.module, self.shape, out_dir, threads)
        self.note: str | None = None

    def build(self, sim: QuantSim, tag: str):
        for q in sim.int_quantizers():
            q.sync_learned()
        sim.eval()
        try:
            return ort_backend.int8_runner(sim, self.shape, self.out_dir / tag, self.threads, "u8")
        except ValueError as exc:  # e.g. 4-bit activations: no INT8 kernel runs them
            self.note = f"no real INT8 model for this config: {exc}"
            return None

    def measure(self, runners: dict, x: torch.Tensor, say: Progress) -> dict[str, float]:
        with MACHINE_LOCK:
            timed = measure_interleaved({"fp32_ort": self.fp32.run, **{k: r.run for k, r in runners.items()}},
                                        x, self.threads, warmup=3, iters=self.iters,
                                        progress=lambda f, msg: say(
                                            None, Msg("timing INT8 vs FP32: {detail}", detail=msg)))
        return {k: v.median_ms for k, v in timed.items()}
