"""Which layer of the real INT8 model first departs from the simulation, and by how much.

The ONNX Runtime INT8 model is exported from the sim, so its QuantizeLinear nodes are the sim's
activation quantizers, in the order the forward pass calls them. Their outputs (the uint8/int8
tensors the fused INT8 kernels produce) become extra graph outputs of a copy of the model, which
ORT still fuses and runs with its INT8 kernels; the sim's own integers at the same points come from
`QuantSim.capture()`. Exact INT8 arithmetic differs from the simulation by at most one step now
and then (float rounding in the requantization); a kernel that saturates (u8 x s8 pairs in int16
on CPUs without VNNI) differs by many steps on many values, from its layer on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from qcore.quant.quantsim import QuantSim
from qcore.runtime.backends import ort as ort_backend

__all__ = ["LayerCheck", "check_layers", "first_divergent", "sim_integers"]

OFF_STEPS = 1  # more integer steps than this between real and simulated values is a disagreement
# A layer has departed when more than 1% of its values disagree and some by many steps. Measured on
# fm_resnet (8 images): exact kernels stay within 5 steps at every layer (one-step differences
# compound through the residual adds, up to 6% of the values of the last adds); int16 saturation
# (qemu -cpu Haswell, 8-bit weights) is 7% of the first conv's values, off by up to 96 steps.
DIVERGENT_FRACTION = 0.01
DIVERGENT_STEPS = 8


@dataclass
class LayerCheck:
    """One activation quantizer: how far the real INT8 model's integers are from the simulation's."""

    name: str
    values: int
    off_fraction: float  # values more than OFF_STEPS integer steps apart
    max_steps: int

    @property
    def divergent(self) -> bool:
        return self.off_fraction > DIVERGENT_FRACTION and self.max_steps >= DIVERGENT_STEPS


def _with_quantizer_outputs(path: Path, out: Path) -> list[str]:
    """A copy of the QDQ model that also outputs every activation QuantizeLinear, in graph order."""
    model = onnx.load(str(path))
    initializers = {i.name for i in model.graph.initializer}
    names = [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in initializers]
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    onnx.save(model, str(out))
    return names


def sim_integers(sim: QuantSim, x: torch.Tensor) -> list[tuple[str, np.ndarray]]:
    """The integer each integer-quantizing activation quantizer produced, in call order."""
    active = {q.name: q for q in sim.int_quantizers()}
    with torch.no_grad(), sim.capture() as records:
        sim(x)
    out = []
    for name, _, y in records:
        q = active.get(name)
        if q is not None:
            shift = 128 if q.scheme.qmin < 0 else 0  # a signed grid is stored as uint8, zero-point + 128, in U8S8
            out.append((name, torch.round(y / q.scale).to(torch.int32).numpy() + int(q.zero_point) + shift))
    return out


def check_layers(sim: QuantSim, onnx_path: Path, x: torch.Tensor, threads: int = 1) -> list[LayerCheck]:
    """Real INT8 (ONNX Runtime, the U8S8 QDQ model exported to `onnx_path`) against the simulation,
    layer by layer, on the batch `x`. Raises ValueError when the two cannot be lined up.

    One image at a time: every layer's output of a 224x224 ResNet50 is ~11 M values per image on each
    side, so a batch of 8 held at once took deploy's peak past 4.7 GB; the tallies are all that is kept."""
    probe = Path(onnx_path).with_name(Path(onnx_path).stem + ".layers.onnx")
    try:
        names = _with_quantizer_outputs(Path(onnx_path), probe)
        sess = ort_backend.session(probe, threads)
    finally:
        probe.unlink(missing_ok=True)
    tally: dict[str, list[int]] = {}  # name -> [values, values off, most steps off], in call order
    for i in range(len(x)):
        one = x[i:i + 1]
        real = sess.run(names, {"x": np.ascontiguousarray(one.numpy(), dtype=np.float32)})
        _add_image(tally, sim_integers(sim, one), real)
        del real
    return [LayerCheck(name, values, off / max(values, 1), steps) for name, (values, off, steps) in tally.items()]


def _add_image(tally: dict[str, list[int]], simulated: list[tuple[str, np.ndarray]], real: list[np.ndarray]) -> None:
    """Add one image's integer differences, quantizer by quantizer, to the running tally."""
    if len(simulated) != len(real):
        raise ValueError(f"{len(real)} quantizers in the INT8 model, {len(simulated)} in the simulation")
    for (name, s), r in zip(simulated, real):
        if r.shape != s.shape:
            raise ValueError(f"{name}: shape {r.shape} in the INT8 model, {s.shape} in the simulation")
        steps = np.abs(r.astype(np.int32) - s)  # a U8S8 model stores the sim's own (unsigned) grid
        row = tally.setdefault(name, [0, 0, 0])
        row[0] += int(steps.size)
        row[1] += int((steps > OFF_STEPS).sum())
        row[2] = max(row[2], int(steps.max()))


def first_divergent(checks: list[LayerCheck]) -> LayerCheck | None:
    return next((c for c in checks if c.divergent), None)
