"""A transformer's Linear layers as exporters write them (MatMul(x, W) + Add(b) on a tokens x channels input)
import as nn.Linear, so the simulation quantizes them; a product of two activations stays a matmul."""

import numpy as np
import torch
from onnx import helper
from torch import nn

from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.zoo.onnx_import import load_onnx
from tests.zoo.onnx_helpers import ort_run
from tests.zoo.test_onnx_operators import save


def test_matmul_plus_bias_becomes_linear_and_attention_products_stay(tmp_path):
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    w2 = rng.standard_normal((4, 3)).astype(np.float32)
    nodes = [helper.make_node("Reshape", ["x", "s"], ["t"]),            # (1, 10, 6): ten tokens of six channels
             helper.make_node("MatMul", ["t", "w1"], ["m1"]),
             helper.make_node("Add", ["b1", "m1"], ["h"]),              # bias first, as some exporters write it
             helper.make_node("Transpose", ["h"], ["ht"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["h", "ht"], ["a"]),            # activation x activation (q k^T-like)
             helper.make_node("MatMul", ["a", "h"], ["ah"]),
             helper.make_node("MatMul", ["ah", "w2"], ["y"])]           # no bias
    path = save(tmp_path, nodes, {"s": np.array([1, 10, 6], np.int64), "w1": w1, "b1": b1, "w2": w2}, 18, out_rank=3)
    gm = load_onnx(path)
    linears = [m for m in gm.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features, m.bias is not None) for m in linears] == [(6, 4, True), (4, 3, False)]
    assert sum(type(m).__name__ == "OnnxMatMul" for m in gm.modules()) == 2  # the two activation products
    x = torch.randn(1, 2, 5, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        np.testing.assert_allclose(gm(x).numpy(), ort_run(path, x), rtol=1e-4, atol=1e-4)
    sim = QuantSim(gm, QuantConfig())
    assert {"w1", "w2"}.isdisjoint(n for n, _ in gm.named_buffers())  # the weights live in the Linear layers only
    assert sum(isinstance(w.layer, nn.Linear) and w.enabled for w in sim.weight_layers.values()) == 2
