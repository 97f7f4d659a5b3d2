"""The FP32 model as it was before rounding and bias steps changed the sim's weights.

AdaRound and GPTQ store their rounded weights in the sim's own float weights (so re-quantizing and exporting
keep them), and bias correction shifts biases. After that, `sim.disabled()` runs the rounded network in float,
not the FP32 one. A later layer's reference (AdaRound's target output, bias correction's mean output) must be
the FP32 network's, or the error the earlier layers' rounding left is never seen, let alone compensated
(measured: fm_mobilenetv2 W4 per-tensor, CLE + AdaRound on entropy ranges fell to chance, 10%, because each
layer matched a target computed through the earlier rounded layers). So every step that changes a layer's
function records the layer's weight and bias first, once (`remember`), and `fp32_reference` runs the graph in
float with those originals swapped in. CLE and SmoothQuant keep the function, so their weights are the reference.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from qcore.quant.quantsim import QuantSim

__all__ = ["remember", "fp32_reference"]


def remember(sim: QuantSim, name: str) -> None:
    """Record weight layer `name`'s float weight and bias before a step changes them (the first record wins)."""
    layer = sim.weight_layers[name].layer
    sim.reference_weights.setdefault(name, (layer.weight.detach().clone(),
                                            None if layer.bias is None else layer.bias.detach().clone()))


@contextmanager
def fp32_reference(sim: QuantSim):
    """Inside, the sim runs in float with every recorded layer's original weight and bias: the FP32 network.
    The tensors are swapped, not copied; quantized-weight caches stay valid (nothing is quantized inside, and the
    weights are the same again after)."""
    saved = {}
    with torch.no_grad(), sim.disabled():
        try:
            for name, (weight, bias) in sim.reference_weights.items():
                layer = sim.weight_layers[name].layer
                saved[name] = (layer.weight.data, None if layer.bias is None else layer.bias.data)
                layer.weight.data = weight
                if layer.bias is not None:
                    layer.bias.data = bias if bias is not None else torch.zeros_like(layer.bias)
            yield sim
        finally:
            for name, (weight, bias) in saved.items():
                layer = sim.weight_layers[name].layer
                layer.weight.data = weight
                if bias is not None:
                    layer.bias.data = bias
