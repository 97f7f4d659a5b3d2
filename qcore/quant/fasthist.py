"""Exact histogram counts for the calibration pass, about 3x faster than torch.histc.

The statistics pass spends most of its extra time binning activations. `csrc/zero_anchored_hist.c`
bins on the zero-anchored power-of-two grid `stats.py` uses (bin = floor(x / width) - k0, exact in
float) with no division per value. It is plain C, compiled on first use with the system C compiler
(a fraction of a second, no torch headers) into a per-user cache, loaded with ctypes, and run on
one chunk per torch thread (ctypes releases the GIL). Without a compiler, `counts` bins the same
floor(x / width) with torch.bincount (`bincount_counts`): the same counts, exactly (a test compares
them), so results never depend on whether gcc is installed; only the speed does. (torch.histc, the
fallback before, divides by the range per value and put a value lying on a bin edge in the
neighbouring bin now and then.)
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from qcore.quant.isa import Isa, cpu_isa

__all__ = ["counts", "available", "bincount_counts", "target_flags"]

SOURCE = Path(__file__).with_name("csrc") / "zero_anchored_hist.c"
# no-trapping-math lets the compiler vectorize floorf; the results stay exact (tests check it)
CFLAGS = ["-O3", "-fno-trapping-math", "-fno-math-errno", "-shared", "-fPIC"]
MIN_PARALLEL = 1 << 18  # below this, one thread (starting another costs more than it saves)

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed = False
_pool: ThreadPoolExecutor | None = None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qcore"


def target_flags(isa: Isa | None = None) -> list[str]:
    """Code generation for the instruction sets CPUID reports, never -march=native: the compiler
    runs natively even when this process runs emulated (qemu -cpu Haswell) or on another CPU than the
    one that filled a shared cache, and a library built for AVX-512 dies there with SIGILL."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    return [f"-march={(isa or cpu_isa()).level}"]  # every instruction set of that level checked, OS support too


def _build() -> ctypes.CDLL | None:
    cc = os.environ.get("CC", "cc")
    source = SOURCE.read_bytes()
    flags = CFLAGS + target_flags()
    # keyed by the flags themselves, so each instruction set gets (and only ever loads) its own build
    key = hashlib.sha256(source + " ".join(flags).encode() + platform.machine().encode()).hexdigest()[:16]
    target = _cache_dir() / f"zero_anchored_hist-{key}.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            out = Path(tmp) / target.name
            subprocess.run([cc, *flags, "-o", str(out), str(SOURCE), "-lm"],
                           check=True, capture_output=True, timeout=60)
            os.replace(out, target)  # atomic: a concurrent build never sees half a library
    lib = ctypes.CDLL(str(target))
    lib.zero_anchored_hist.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int64,
                                       ctypes.c_int64, ctypes.c_void_p]
    lib.zero_anchored_hist.restype = ctypes.c_int
    return lib


def _library() -> ctypes.CDLL | None:
    global _lib, _failed
    if _lib is not None or _failed:
        return _lib
    with _lock:
        if _lib is None and not _failed:
            if os.environ.get("QX_NO_FAST_HIST"):
                _failed = True
                return None
            try:
                _lib = _build()
            except (OSError, subprocess.SubprocessError):
                _failed = True
    return _lib


def available() -> bool:
    return _library() is not None


BINCOUNT_CHUNK = 1 << 22  # values binned at once without the kernel: bounds the int64 index buffer to 32 MB


def bincount_counts(x: torch.Tensor, width: float, k0: int, nbins: int) -> torch.Tensor:
    """The kernel's counts in torch alone: bin floor(x * (1 / width)) - k0, clamped to the window. The width is
    a power of two, so the product is exact, as in the kernel."""
    x = x.detach().reshape(-1).float()
    inv = 1.0 / width
    out = torch.zeros(nbins, dtype=torch.int64)
    for chunk in x.split(BINCOUNT_CHUNK):
        index = torch.floor(chunk * inv).to(torch.int64).sub_(k0).clamp_(0, nbins - 1)
        out += torch.bincount(index, minlength=nbins)
    return out.to(torch.float64)


def counts(x: torch.Tensor, width: float, k0: int, nbins: int) -> torch.Tensor:
    """float64 counts of the finite float32 values `x` in bins [(k0 + i) * width, (k0 + i + 1) * width):
    the compiled kernel where there is one, else torch.bincount (the same counts)."""
    global _pool
    lib = _library()
    if lib is None:
        return bincount_counts(x, width, k0, nbins)
    x = x.detach().contiguous().view(-1)
    if x.dtype != torch.float32:
        x = x.float()
    inv = 1.0 / width
    parts = max(1, min(torch.get_num_threads(), x.numel() // MIN_PARALLEL))
    bounds = [x.numel() * i // parts for i in range(parts + 1)]
    out = torch.zeros(parts, nbins, dtype=torch.int64)

    def run(i: int) -> int:
        chunk = x[bounds[i]: bounds[i + 1]]
        return lib.zero_anchored_hist(chunk.data_ptr(), chunk.numel(), inv, k0, nbins, out[i].data_ptr())

    if parts == 1:
        codes = [run(0)]
    else:
        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="qcore-hist")
        futures = [_pool.submit(run, i) for i in range(1, parts)]
        codes = [run(0)] + [f.result() for f in futures]
    if any(codes):
        raise MemoryError("the histogram kernel could not allocate its buffers")
    return out.sum(0).to(torch.float64)
