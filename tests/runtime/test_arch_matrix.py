"""Real INT8 (ORT U8S8) equals the simulation op by op on ImageNet-class graphs: every quantized op of
every architecture in the matrix, fed the simulation's integers, is at most one integer step off on
this CPU (whatever its class: "auto" picks the weight range that is exact there)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qcore.quant.bias_range import input_quantizer
from qcore.runtime.backends import ort as ort_backend
from qcore.runtime.isolated_check import check_ops, departing, isolated_summary
from tests.runtime.arch_matrix import ARCHITECTURES, calibrated


def _int8_input_convs(sim) -> set[str]:
    """Convs whose input arrives on an integer grid in the simulation: QLinearConv in ORT. (A Linear after
    Flatten runs as a float Gemm on the dequantized integers there: exact, but float.)"""
    modules = dict(sim.model.named_modules())
    return {n.target for n in sim.model.graph.nodes if n.op == "call_module" and n.target in sim.weight_layers
            and isinstance(sim.weight_layers[n.target].layer, nn.Conv2d)
            and (q := input_quantizer(n, modules)) is not None and q.quantizes_int}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_quantized_op_of_the_architecture_matches_the_simulation(tmp_path, arch):
    torch.set_num_threads(1)
    sim, x = calibrated(arch)
    runner = ort_backend.int8_runner(sim, (3, 224, 224), tmp_path, 1, "u8")
    checks = check_ops(sim, runner.path, x)
    summary = isolated_summary(checks)
    print(arch, {k: v for k, v in summary.items() if k != "departing"}, "bias floors:", sim.bias_floors)
    assert not departing(checks), [(c["name"], c["max_steps"], c["off_fraction"]) for c in summary["departing"]]
    int8_in = _int8_input_convs(sim)
    assert int8_in and all(c.int8 for c in checks if c.name in int8_in), [c.to_dict() for c in checks if c.name in int8_in and not c.int8]
