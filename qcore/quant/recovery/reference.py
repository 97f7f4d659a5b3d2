"""The FP32 model as it was before rounding and bias steps changed the sim's weights.

AdaRound and GPTQ store their rounded weights in the sim's own float weights (so re-quantizing and exporting
keep them), and bias correction shifts biases. A later layer's reference (AdaRound's target output, bias
correction's mean output) must be the FP32 network's, or the error the earlier layers' rounding left is never
seen, let alone compensated (measured: fm_mobilenetv2 W4 per-tensor, CLE + AdaRound on entropy ranges fell to
chance, 10%, because each layer matched a target computed through the earlier rounded layers). So every step
that changes a layer's function records the layer's weight and bias first, once (`remember`), and a layer kept
in float runs those originals (`QuantWeightLayer.float_weights`): `sim.disabled()` is the FP32 network, and so
is a layer that a sweep or a partial config keeps in float. CLE and SmoothQuant keep the function, so their
weights are the reference.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from qcore.quant.quantsim import QuantSim

__all__ = ["remember", "fp32_reference"]


def remember(sim: QuantSim, name: str) -> None:
    """Record weight layer `name`'s float weight and bias before a step changes them (the first record wins)."""
    sim.weight_layers[name].remember_original()


@contextmanager
def fp32_reference(sim: QuantSim):
    """Inside, the sim runs the FP32 network: no quantizer, every recorded layer's original weight and bias."""
    with torch.no_grad(), sim.disabled():
        yield sim
