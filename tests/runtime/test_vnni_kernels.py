"""Real INT8 with the AVX-512 VNNI kernels, on a machine with AMX: the VNNI class without a VNNI-only machine.

ONNX Runtime (MLAS) and oneDNN pick AMX kernels only after the kernel grants the process AMX tile data
(arch_prctl ARCH_REQ_XCOMP_PERM), which they ask for through libc's `syscall`. `no_amx.c`, preloaded, refuses that
request, so they run the AVX-512 VNNI kernels a VNNI-only CPU (Cascade Lake, Ice Lake) runs. The test checks that
the shim works (without it the permission is granted, with it it is not) and then runs the architecture matrix's
isolated per-op check in that process: every quantized op at most one integer step off, as on the AMX and AVX2
classes (`test_arch_matrix.py`, `test_avx2_cpu.py`). CPUID still says AMX, so "auto" picks 8-bit weights, which is
what it picks on a VNNI CPU too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qcore.quant.isa import cpu_isa
from tests.runtime.arch_matrix import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not cpu_isa().amx, reason="hiding AMX needs a CPU with AMX (VNNI CPUs run VNNI "
                                                            "kernels in every other test)")

PERMISSION = r"""
import ctypes, json
import onnxruntime  # MLAS asks for AMX when the library loads
libc = ctypes.CDLL(None)
mask = ctypes.c_ulong(0)
libc.syscall(158, 0x1022, ctypes.byref(mask))  # arch_prctl(ARCH_GET_XCOMP_PERM): the granted state components
print("RESULT " + json.dumps({"amx_granted": bool(mask.value >> 18 & 1)}))  # bit 18: XTILEDATA
"""

MATRIX = r"""
import json, sys, tempfile
from pathlib import Path
import torch
torch.set_num_threads(1)
from qcore.runtime.backends import ort as ort_backend
from qcore.runtime.isolated_check import check_ops, isolated_summary
from tests.runtime.arch_matrix import calibrated
out = {}
for arch in sys.argv[1:]:
    sim, x = calibrated(arch)
    with tempfile.TemporaryDirectory() as tmp:
        runner = ort_backend.int8_runner(sim, (3, 224, 224), Path(tmp), 1, "u8")
        out[arch] = isolated_summary(check_ops(sim, runner.path, x))
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build the AMX-hiding shim (apt-get install gcc)")
    so = tmp_path_factory.mktemp("shim") / "no_amx.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(so), str(Path(__file__).with_name("no_amx.c")), "-ldl"],
                   check=True)
    return so


def _run(script: str, *args: str, preload: Path | None = None, timeout: int = 1500) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if preload is not None:
        env["LD_PRELOAD"] = str(preload)
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_the_shim_keeps_amx_from_onnx_runtime(shim):
    if not _run(PERMISSION)["amx_granted"]:  # a kernel older than 5.16 grants no AMX: ORT runs VNNI kernels anyway
        pytest.skip("this OS grants no AMX tile data, so every test here already runs the VNNI kernels")
    assert _run(PERMISSION, preload=shim)["amx_granted"] is False


@pytest.mark.slow
def test_every_quantized_op_matches_the_simulation_on_the_vnni_kernels(shim):
    result = _run(MATRIX, *ARCHITECTURES, preload=shim)  # about 30 s for the eight
    print(json.dumps({a: {k: v for k, v in s.items() if k != "departing"} for a, s in result.items()}))
    assert set(result) == set(ARCHITECTURES)
    for arch, summary in result.items():
        assert summary["int8_ops"] > 0 and not summary["departing"], (arch, summary["departing"])
