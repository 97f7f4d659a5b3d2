"""Each quantized op of the real INT8 model, fed the simulation's own integers, against the simulation.

`layer_check` runs the real model end to end, so a one-step rounding difference in one layer
changes the next layer's input, and on a deep network the differences compound until every
layer looks off. Here every quantized op runs alone (see `qdq_graph`): its sub-model gets the
integers the simulation fed that op, ONNX Runtime fuses it with all graph optimizations on (as it
fuses the whole model) and runs its INT8 kernel, and the result is compared with the integers the
simulation produced there. An op that computes what the simulation computes is at most one step
off (float rounding in the requantization); more means the op itself differs: another padding
value, another function, an int16 saturation, an int32 bias that overflowed.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from qcore.quant.quantsim import QuantSim
from qcore.runtime.layer_check import OFF_STEPS, sim_integers
from qcore.runtime.qdq_graph import OpGraph, op_graphs

__all__ = ["OpCheck", "check_ops", "departing", "isolated_summary", "isolated_report"]

INT_KERNELS = {"QuantizeLinear", "ConvInteger", "MatMulInteger", "QGemm", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
PLUMBING = {"QuantizeLinear", "DequantizeLinear", "Transpose", "Reshape", "Shape", "Gather", "Concat", "Cast",
            "Unsqueeze", "Squeeze", "Slice", "ConstantOfShape", "Constant", "Identity", "Sub", "Mul", "Div"}


@dataclass
class OpCheck:
    """One quantized op: how far ONNX Runtime's integers are from the simulation's, on the same input."""

    name: str
    kernels: list[str] = field(default_factory=list)  # what ORT ran for it after fusion ("QLinearConv", "Conv")
    values: int = 0
    off_fraction: float = 0.0  # values more than OFF_STEPS integer steps apart
    max_steps: int = 0

    @property
    def exact(self) -> bool:
        return self.max_steps <= OFF_STEPS

    @property
    def int8(self) -> bool:
        """ORT ran an integer kernel for this op (not only float ops between Dequantize and Quantize)."""
        return any(k.startswith("QLinear") or k in INT_KERNELS for k in self.kernels)

    def to_dict(self) -> dict:
        return {**asdict(self), "exact": self.exact, "int8": self.int8}


def _session(model: onnx.ModelProto, folder: Path) -> tuple[ort.InferenceSession, list[str]]:
    """An ORT session with every graph optimization (as the real model gets), and the ops it runs."""
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.optimized_model_filepath = str(folder / "optimized.onnx")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ran = onnx.load(so.optimized_model_filepath, load_external_data=False)
    kernels = [n.op_type for n in ran.graph.node if n.op_type not in PLUMBING or n.domain == "com.microsoft"]
    return sess, kernels or [n.op_type for n in ran.graph.node if n.op_type == "QuantizeLinear"]


def _feeds(op: OpGraph, x: np.ndarray, ints: dict[str, np.ndarray], dtypes: dict[str, np.dtype]) -> dict:
    return {t: x if t not in ints else ints[t].astype(dtypes[t]) for t in op.inputs}


def check_ops(sim: QuantSim, onnx_path: Path, x: torch.Tensor) -> list[OpCheck]:
    """Every activation quantizer of the U8S8 QDQ model at `onnx_path`, run alone on the simulation's
    integers for the batch `x`. Raises ValueError when the model and the sim cannot be lined up."""
    model = onnx.load(str(onnx_path))
    ops = op_graphs(model)
    simulated = sim_integers(sim, x)
    if len(simulated) != len(ops):
        raise ValueError(f"{len(ops)} quantizers in the INT8 model, {len(simulated)} in the simulation")
    ints = {op.output: s for op, (_, s) in zip(ops, simulated)}
    xf = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        for op, (name, s) in zip(ops, simulated):
            sess, kernels = _session(op.model, Path(tmp))
            dtypes = {i.name: np.uint8 if "uint8" in i.type else np.int8 for i in sess.get_inputs()}
            real = sess.run([op.output], _feeds(op, xf, ints, dtypes))[0].astype(np.int64)
            if real.shape != s.shape:
                raise ValueError(f"{name}: shape {real.shape} in the INT8 model, {s.shape} in the simulation")
            steps = np.abs(real - s)
            checks.append(OpCheck(name, kernels, int(steps.size), float((steps > OFF_STEPS).mean()), int(steps.max())))
    return checks


def departing(checks: list[OpCheck]) -> list[OpCheck]:
    """The ops that compute something other than the simulation (more than one step off somewhere)."""
    return [c for c in checks if not c.exact]


def isolated_summary(checks: list[OpCheck]) -> dict:
    """Plain data for a report: how many ops are checked and run INT8, the worst, and the departing ones."""
    worst = max(checks, key=lambda c: c.max_steps, default=None)
    return {"ops": len(checks), "int8_ops": sum(c.int8 for c in checks),
            "max_steps": worst.max_steps if worst else 0, "worst": worst.name if worst else None,
            "departing": [c.to_dict() for c in departing(checks)]}


def isolated_report(sim: QuantSim, onnx_path: Path, x: torch.Tensor) -> dict:
    """`isolated_summary` of `check_ops` on `x` (one or two images suffice: no compounding to average
    out), or {"error": ...}: a diagnostic never ends the run it explains."""
    try:
        return {"images": len(x), **isolated_summary(check_ops(sim, onnx_path, x))}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"error": f"{type(exc).__name__}: {exc}"}
