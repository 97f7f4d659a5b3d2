"""Measured INT8 latency of partial / mixed-precision configs (the sensitivity page's re-measure and
the greedy fallback's curve): each config is exported and timed for real, so the quantize/dequantize
transitions that float layers add are paid for in the number."""

from __future__ import annotations

from pathlib import Path

import torch

from qcore.analysis.sensitivity import Prepared
from qcore.quant.qconfig import QuantConfig
from qcore.runtime.backends import ort as ort_backend
from qcore.runtime.latency import measure_interleaved
from qcore.runtime.machine import MACHINE_LOCK

__all__ = ["latency_probe", "sim_latency"]


def latency_probe(p: Prepared, out_dir, threads: int = 2, iters: int = 20, warmup: int = 3):
    """A function config -> measured batch-1 latency (ms) of the real ONNX Runtime INT8 model.

    Each call exports the config's INT8 model and times it interleaved with the FP32 ONNX Runtime
    model in this process. The FP32 medians of the same rounds collect in `.fp32_ms`, for ratios.
    """
    out_dir = Path(out_dir)
    shape = p.loaded.spec.input_shape
    fp32 = ort_backend.fp32_runner(p.loaded.module, shape, out_dir, threads)
    x = p.xs[0][:1]
    fp32_ms: list[float] = []

    def measure(config: QuantConfig) -> float:
        p.sim.configure(config)
        p.sim.apply_ranges(ranges=p.ranges)
        int8 = ort_backend.int8_runner(p.sim, shape, out_dir, threads)
        with MACHINE_LOCK:
            timed = measure_interleaved({"fp32": fp32.run, "int8": int8.run}, x, threads, warmup, iters)
        fp32_ms.append(timed["fp32"].median_ms)
        return timed["int8"].median_ms

    measure.fp32_ms = fp32_ms
    return measure


def sim_latency(sim, module, input_shape, out_dir, threads: int = 2, iters: int = 20, warmup: int = 3) -> dict:
    """Batch-1 latency (median ms) of a calibrated sim as real ONNX Runtime INT8, interleaved with the FP32
    model in ONNX Runtime, in this process: the speed of a recovered model as it would deploy."""
    out_dir = Path(out_dir)
    fp32 = ort_backend.fp32_runner(module, input_shape, out_dir, threads)
    int8 = ort_backend.int8_runner(sim, input_shape, out_dir, threads)
    x = torch.zeros(1, *input_shape)
    with MACHINE_LOCK:
        timed = measure_interleaved({"fp32": fp32.run, "int8": int8.run}, x, threads, warmup, iters)
    return {"fp32_ms": timed["fp32"].median_ms, "int8_ms": timed["int8"].median_ms,
            "speedup": timed["fp32"].median_ms / timed["int8"].median_ms}
