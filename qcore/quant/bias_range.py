"""Keep every conv's bias inside the int32 that INT8 kernels add it in.

An INT8 conv adds its bias as an int32 on the accumulator's grid: round(bias / (input scale x
weight scale)). A channel whose BN gamma trained to ~0 (a dead channel, common in trained nets)
has weights ~0 after folding, so its per-channel weight scale is tiny (float32 eps), while its
bias (BN's beta) is real: bias / (0.02 x 1.2e-7) passes 2^31 from |beta| ~ 5, and ONNX Runtime's
int32 bias then wraps: that whole channel comes out wrong, up to 255 steps off (measured: a
dead stem channel of a tf_efficientnet-class model). The simulation cannot know this from the
weights alone, so here each such channel's weight scale gets a floor from its input's scale:
|bias| / (input scale x 2^30). Its weights (~0) quantize to ~0 on that grid, in the simulation
and in the exported model alike, and the int32 bias fits with room for the products.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["INT32_BIAS_LIMIT", "input_quantizer", "fit_int32_biases"]

INT32_BIAS_LIMIT = 2 ** 30  # half the int32 range: the rest is room for the sum of products

# ops that move or pad integers without changing their grid: a conv after them reads its input
# quantizer's integers (ONNX Runtime fuses Pad into QLinearConv, padding with the zero-point)
_KEEP_FUNCTIONS = {F.pad, F.max_pool2d, torch.flatten, torch.reshape, torch.permute, torch.transpose,
                   torch.ops.aten.constant_pad_nd.default, torch.ops.aten.pad.default, operator.getitem}
_KEEP_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "contiguous"}
_KEEP_MODULES = (nn.MaxPool2d, nn.Flatten, nn.Identity, nn.Dropout, nn.ZeroPad2d, nn.ConstantPad2d)


def input_quantizer(node: fx.Node, modules: dict) -> nn.Module | None:
    """The activation quantizer whose integers `node` (a weight layer's call) reads, if any."""
    src = node.args[0] if node.args else None
    while isinstance(src, fx.Node):
        if src.op == "call_module" and str(src.target).startswith("quantizers."):
            return modules[src.target]
        keeps = ((src.op == "call_function" and src.target in _KEEP_FUNCTIONS)
                 or (src.op == "call_method" and src.target in _KEEP_METHODS)
                 or (src.op == "call_module" and isinstance(modules.get(src.target), _KEEP_MODULES)))
        if not keeps:
            return None
        src = src.args[0] if src.args else None
    return None


@torch.no_grad()
def fit_int32_biases(sim) -> dict[str, int]:
    """Set each weight layer's weight-scale floor from its input quantizer's current scale;
    returns the layers whose floor raises some channel's scale (name -> channels)."""
    modules = dict(sim.model.named_modules())
    raised = {}
    for node in sim.model.graph.nodes:
        wl = sim.weight_layers.get(node.target) if node.op == "call_module" else None
        if wl is None:
            continue
        q = input_quantizer(node, modules)
        bias = wl.layer.bias
        if q is None or not q.quantizes_int or bias is None:
            wl.set_scale_floor(None)
            continue
        floor = bias.detach().abs().float() / (float(q.scale) * INT32_BIAS_LIMIT)
        wl.set_scale_floor(floor)
        if wl.enabled and wl.cfg.weight_dtype == "int":
            scheme = wl.effective_scheme(wl.layer.weight)
            if scheme.granularity != "group":
                natural = wl.grid(wl.layer.weight, scheme, floor=False)[0]
                n = int((natural.expand_as(floor) < floor).sum())
                if n:
                    raised[wl.name] = n
    return raised
