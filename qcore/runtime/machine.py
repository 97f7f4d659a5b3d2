"""Facts about this machine that decide INT8 behaviour and speed, and the lock that keeps timings honest.

`MACHINE_LOCK` is one process-wide lock: latency measurements and training hold it so that
timings are never taken while another job is using the cores.
"""

from __future__ import annotations

import platform
import threading
from pathlib import Path

import torch

__all__ = ["MACHINE_LOCK", "cpu_features"]

MACHINE_LOCK = threading.Lock()


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
        "bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "fp16": "avx512_fp16" in flags,
        "avx512": "avx512f" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "amx": "amx_int8" in flags,
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
