"""ONNX Runtime sessions: FP32, static INT8 from a QDQ export (U8S8 or S8S8), and dynamic INT8."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from qcore.runtime.backends.common import Runner
from qcore.runtime.backends.onnx_export import export_onnx, export_qdq

__all__ = ["session", "ort_runner", "fp32_runner", "int8_runner", "dynamic_runner", "optimized_ops"]

QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
COMPUTE_OPS = {"Conv", "Gemm", "MatMul", "Add", "GlobalAveragePool", "AveragePool", "MaxPool", "Mul", "Relu",
               "Clip", "Sigmoid", "HardSwish", "Gelu", "Erf", "Tanh", "Softmax", "ConvTranspose"}


def session(path: Path, threads: int, optimized_path: Path | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # Idle ORT threads must not spin: latency is timed with other runtimes interleaved, and
    # spinning threads would steal the cores from whichever path runs next.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # No memory pattern: with it, the arena shrinkage each batch run asks for (_shrinking) left memory behind on
    # every evaluation batch: scoring ResNet50's U8S8 model on 1024 images at 224x224 grew from 1.8 to 4.6 GB
    # (5.5 GB deploy peak); without it 1.9 GB. Latency the same: 28.3 vs 28.5 ms at batch 1, 838 vs 836 ms at 32
    # (AVX2 class, 2 threads).
    so.enable_mem_pattern = False
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _shrinking() -> ort.RunOptions:
    """Run options that hand the arena's free memory back at the end of the run. ORT's CPU arena keeps the
    high-water mark of every batch size a session has run: for an ImageNet model at batch 32 that is hundreds
    of megabytes per session, and a deploy holds five sessions. Used for batches above 1 only, where the
    allocation it costs the next run is small next to the run itself (torch frees its CPU tensors the same way)."""
    opts = ort.RunOptions()
    opts.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return opts


def optimized_ops(path: Path) -> Counter:
    """Operator counts of the graph ONNX Runtime actually runs (after its fusions)."""
    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def ort_runner(name: str, kind: str, path: Path, threads: int) -> Runner:
    opt_path = path.with_name(path.stem + ".optimized.onnx")
    sess = session(path, threads, opt_path)
    ops = optimized_ops(opt_path)
    opt_path.unlink(missing_ok=True)

    shrink = _shrinking()

    def run(x: torch.Tensor) -> torch.Tensor:
        feed = {"x": np.ascontiguousarray(x.numpy(), dtype=np.float32)}
        return torch.from_numpy(sess.run(None, feed, shrink if len(x) > 1 else None)[0])

    float_ops = sorted(f"{op} x{n}" for op, n in ops.items() if op in COMPUTE_OPS) if kind != "fp32" else []
    transitions = sum(n for op, n in ops.items() if op in QUANT_OPS)
    return Runner(name, kind, run, path.stat().st_size, path, dict(ops), float_ops, transitions)


def fp32_runner(model, input_shape, out_dir: Path, threads: int) -> Runner:
    path = export_onnx(model, input_shape, Path(out_dir) / "model_fp32.onnx")
    return ort_runner("ort_fp32", "fp32", path, threads)


def int8_runner(sim, input_shape, out_dir: Path, threads: int, activations: str = "u8") -> Runner:
    """Static INT8 from the QuantSim's own ranges; activations "u8" (U8S8) or "s8" (S8S8)."""
    path = export_qdq(sim, input_shape, Path(out_dir) / f"model_int8_{activations}s8.onnx", activations)
    return ort_runner(f"ort_{'u8s8' if activations == 'u8' else 's8s8'}", "int8", path, threads)


def dynamic_runner(fp32_path: Path, out_dir: Path, threads: int) -> Runner:
    """ONNX Runtime dynamic quantization: int8 weights, activations quantized per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = Path(out_dir) / "model_dynamic_int8.onnx"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs advice on the root logger
    try:
        quantize_dynamic(str(fp32_path), str(path), weight_type=QuantType.QInt8, per_channel=False)
    finally:
        root.setLevel(level)
    return ort_runner("ort_dynamic", "dynamic", path, threads)
