"""Facts about this machine that decide INT8 behaviour and speed, and the lock that keeps timings honest.

`MACHINE_LOCK` is one process-wide lock: latency measurements and training hold it so that
timings are never taken while another job is using the cores.
"""

from __future__ import annotations

import platform
import threading
from pathlib import Path

import torch

from qcore.quant.isa import cpu_isa

__all__ = ["MACHINE_LOCK", "cpu_features"]

MACHINE_LOCK = threading.Lock()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> dict:
    """The CPU, its instruction sets as CPUID reports them (what the INT8 kernels dispatch on), its
    class (AVX2 only / VNNI / AMX), and what torch and ONNX Runtime report about themselves."""
    import onnxruntime as ort

    isa = cpu_isa()
    return {
        "cpu": _cpu_model(),
        **isa.to_dict(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_quantized_engines": list(torch.backends.quantized.supported_engines),
        "onnxruntime": f"{ort.__version__} ({', '.join(ort.get_available_providers())})",
        "threads": torch.get_num_threads(),
    }
