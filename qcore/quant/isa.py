"""Which x86 instructions this CPU runs, read with the CPUID instruction itself.

The INT8 kernels of ONNX Runtime, fbgemm and oneDNN pick their code by CPUID, so that is what
decides whether u8 x s8 products are exact: with VNNI (AVX512-VNNI or AVX-VNNI) they accumulate in
int32; without it, VPMADDUBSW adds pairs of products into a saturating int16, which 8-bit weights
overflow. `/proc/cpuinfo` is not enough: under `qemu-x86_64 -cpu Haswell` (and in some VMs) it
shows the host's flags while CPUID, and so every kernel, sees another CPU.

CPUID is run from a few bytes of machine code placed in executable memory (the way py-cpuinfo
does it); where that is impossible (not x86-64, no executable mapping) the flags come from
/proc/cpuinfo and `source` says so.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

__all__ = ["Isa", "cpu_isa", "cpuid"]

# cpuid(leaf in edi, subleaf in esi, out uint32[4] in rdx): eax, ebx, ecx, edx -> out[0..3]
_CPUID_CODE = bytes([
    0x53,                    # push rbx
    0x49, 0x89, 0xD0,        # mov r8, rdx
    0x89, 0xF8,              # mov eax, edi
    0x89, 0xF1,              # mov ecx, esi
    0x0F, 0xA2,              # cpuid
    0x41, 0x89, 0x00,        # mov [r8], eax
    0x41, 0x89, 0x58, 0x04,  # mov [r8+4], ebx
    0x41, 0x89, 0x48, 0x08,  # mov [r8+8], ecx
    0x41, 0x89, 0x50, 0x0C,  # mov [r8+12], edx
    0x5B,                    # pop rbx
    0xC3,                    # ret
])
_keep: list = []  # the executable mapping must outlive every call


@dataclass(frozen=True)
class Isa:
    """The instruction-set facts that decide INT8 (and BF16/FP16) behaviour and speed."""

    avx2: bool
    avx512: bool  # AVX512F
    avx512_vnni: bool
    avx_vnni: bool
    amx: bool  # AMX-INT8 tiles
    bf16: bool  # AVX512_BF16 or AMX-BF16
    fp16: bool  # AVX512_FP16
    source: str  # "cpuid" or "/proc/cpuinfo"
    level: str = "x86-64"  # the x86-64 micro-architecture level the compiler may target: x86-64, -v3 or -v4

    @property
    def vnni(self) -> bool:
        """u8 x s8 dot products accumulate in int32 (no int16 saturation)."""
        return self.avx512_vnni or self.avx_vnni or self.amx

    @property
    def cpu_class(self) -> str:
        """The class the project names next to every figure."""
        if self.amx:
            return "AMX"
        if self.vnni:
            return "VNNI (AVX-512 VNNI)" if self.avx512_vnni else "VNNI (AVX-VNNI)"
        return "AVX2 only (no VNNI)" if self.avx2 else "no AVX2"

    def to_dict(self) -> dict:
        return {**asdict(self), "vnni": self.vnni, "cpu_class": self.cpu_class}


def _cpuid_function():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(_CPUID_CODE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))(address)
    _keep.append((buf, fn))
    return fn


@lru_cache(maxsize=None)
def _cpuid_fn():
    try:
        return _cpuid_function()
    except (OSError, ValueError, PermissionError):
        return None


def cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int] | None:
    """(eax, ebx, ecx, edx) of CPUID(leaf, subleaf), or None where CPUID cannot be run here."""
    fn = _cpuid_fn()
    if fn is None:
        return None
    out = (ctypes.c_uint32 * 4)()
    fn(leaf, subleaf, out)
    return tuple(out)


def _bit(value: int, n: int) -> bool:
    return bool((value >> n) & 1)


def _level(c1: int, b7: int, ext_c: int) -> str:
    """The highest x86-64 level whose every instruction set CPUID reports and torch (whose cpuinfo
    also checks that the OS saves the wider registers, XGETBV) agrees to use."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    v3 = all(_bit(c1, n) for n in (12, 22, 27, 29)) and all(_bit(b7, n) for n in (3, 5, 8)) and _bit(ext_c, 5)
    v4 = v3 and all(_bit(b7, n) for n in (16, 17, 28, 30, 31))
    if v4 and capability == "AVX512":
        return "x86-64-v4"
    if v3 and capability in ("AVX2", "AVX512"):
        return "x86-64-v3"
    return "x86-64"


def _from_cpuid() -> Isa | None:
    top = cpuid(0)
    if top is None or top[0] < 7:
        return None
    c1 = cpuid(1)[2]
    a70, b7, c7, d7 = cpuid(7, 0)
    a71 = cpuid(7, 1)[0] if a70 >= 1 else 0
    ext_c = cpuid(0x80000001)[2] if cpuid(0x80000000)[0] >= 0x80000001 else 0
    return Isa(avx2=_bit(b7, 5), avx512=_bit(b7, 16), avx512_vnni=_bit(c7, 11), avx_vnni=_bit(a71, 4),
               amx=_bit(d7, 25) and _bit(d7, 24), bf16=_bit(a71, 5) or _bit(d7, 22), fp16=_bit(d7, 23),
               source="cpuid", level=_level(c1, b7, ext_c))


def _from_proc() -> Isa:
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return Isa(avx2="avx2" in flags, avx512="avx512f" in flags, avx512_vnni="avx512_vnni" in flags,
               avx_vnni="avx_vnni" in flags, amx="amx_int8" in flags,
               bf16=bool({"avx512_bf16", "amx_bf16"} & flags), fp16="avx512_fp16" in flags, source="/proc/cpuinfo")


@lru_cache(maxsize=1)
def cpu_isa() -> Isa:
    """This CPU's instruction sets, as its INT8 kernels see them (read once per process)."""
    return _from_cpuid() or _from_proc()
