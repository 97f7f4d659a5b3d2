"""Quantization Explorer's engine. Never imports streamlit.

torch's OpenMP threads spin only briefly (GOMP_SPINCOUNT) once a parallel region ends: long enough
to catch the next op of the same forward pass, short enough to free the core soon after, for the
calibration pass's histogram threads and for other runtimes timed in the same process. This must
be set before torch loads its OpenMP runtime; a value the user set wins.

glibc's malloc hands every block over 128 KB to mmap and gives it back at free: each activation tensor
(tens of MB at evaluation batches) then costs fresh zeroed pages, i.e. one more pass over memory per
operator. Raising the mmap and trim thresholds keeps such blocks in the heap for reuse (measured: the
"all but this layer" half of the sensitivity sweep, fm_resnet, 1000 images, 17.1 s -> 10.9 s on 2
cores). Blocks over MMAP_THRESHOLD still go to mmap; QX_NO_MALLOPT=1 leaves malloc as it is.
The price is memory kept after use, in every thread's malloc arena: `release_free_memory()` hands it back
(malloc_trim) where a long job moves from one stage to the next (deploy's paths: measured 1 GB more peak
for every 200 more images without it, mobilenet_v2 at 224x224).
"""

import ctypes
import os
import sys

os.environ.setdefault("GOMP_SPINCOUNT", "10000")

MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 512 << 20


def _keep_large_blocks_in_the_heap() -> None:
    if not sys.platform.startswith("linux") or os.environ.get("QX_NO_MALLOPT"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD):  # glibc versions that cap it at 32 MiB refuse more
        libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, TRIM_THRESHOLD)


_keep_large_blocks_in_the_heap()


def release_free_memory() -> None:
    """Give the free memory of every malloc arena back to the system (glibc's malloc_trim; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
