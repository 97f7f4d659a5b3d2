"""CPUID-based instruction-set facts, and the histogram kernel built only for what CPUID reports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qcore.quant import fasthist
from qcore.quant.isa import Isa, _from_proc, cpu_isa, cpuid

ROOT = Path(__file__).resolve().parents[2]
QEMU = "/usr/bin/qemu-x86_64"
X86 = os.uname().machine in ("x86_64", "amd64")


@pytest.mark.skipif(not X86, reason="CPUID is an x86 instruction")
def test_cpuid_runs_and_agrees_with_what_torch_dispatches_on():
    assert cpuid(0)[0] >= 7  # the highest standard leaf: every AVX2-era CPU has leaf 7
    isa = cpu_isa()
    assert isa.source == "cpuid"
    capability = torch.backends.cpu.get_cpu_capability()
    assert isa.avx512 == capability.startswith("AVX512")
    assert isa.avx2 == (capability != "DEFAULT")
    if not _from_proc().avx512:  # a kernel that hides AVX-512 hides it from both
        assert not isa.avx512


def test_cpu_class_and_vnni_follow_the_flags():
    base = dict(avx2=True, avx512=False, avx512_vnni=False, avx_vnni=False, amx=False, bf16=False, fp16=False,
                source="test")
    assert Isa(**base).cpu_class == "AVX2 only (no VNNI)" and not Isa(**base).vnni
    assert Isa(**{**base, "avx_vnni": True}).vnni
    assert Isa(**{**base, "avx512": True, "avx512_vnni": True}).cpu_class == "VNNI (AVX-512 VNNI)"
    assert Isa(**{**base, "amx": True}).cpu_class == "AMX"


def test_the_kernel_is_built_for_the_cpuid_instruction_set_never_native():
    base = dict(avx2=True, avx512=False, avx512_vnni=False, avx_vnni=False, amx=False, bf16=False, fp16=False,
                source="test")
    if X86:
        assert fasthist.target_flags(Isa(**base, level="x86-64-v3")) == ["-march=x86-64-v3"]
        assert fasthist.target_flags(Isa(**base)) == ["-march=x86-64"]  # a level is only what CPUID fully reports
        assert fasthist.target_flags() == [f"-march={cpu_isa().level}"]
        assert cpu_isa().level == {"AVX512": "x86-64-v4", "AVX2": "x86-64-v3"}.get(
            torch.backends.cpu.get_cpu_capability(), "x86-64")
    assert not any("native" in f for f in fasthist.CFLAGS + fasthist.target_flags())


@pytest.mark.slow
@pytest.mark.skipif(not (X86 and os.path.exists(QEMU)), reason="needs Debian's qemu-user (apt-get install qemu-user)")
def test_under_an_avx2_only_cpu_the_kernel_runs_and_counts_exactly(tmp_path):
    """qemu -cpu Haswell hides AVX-512 and VNNI from CPUID while /proc/cpuinfo still shows the host's:
    the statistics pass must see the emulated CPU and its kernel must not die with SIGILL there."""
    code = (
        "import torch; from qcore.quant import fasthist; from qcore.quant.isa import cpu_isa;"
        "isa = cpu_isa(); assert not isa.avx512 and not isa.vnni and isa.avx2 and isa.level == 'x86-64-v3', isa;"
        "x = torch.randn(100_000); counts = fasthist.counts(x, 1 / 64, -400, 800);"
        "ref = torch.bincount((torch.floor(x * 64).long() + 400).clamp(0, 799), minlength=800);"
        "assert counts is not None and torch.equal(counts.long(), ref); print('ok', isa.cpu_class)"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}  # a cache of its own: the build happens here
    proc = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ok AVX2 only (no VNNI)" in proc.stdout
