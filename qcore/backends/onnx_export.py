"""Export to ONNX: the FP32 model, and the QuantSim as a QDQ model carrying its exact ranges.

torch's fake-quant ops export as QuantizeLinear/DequantizeLinear pairs; ONNX Runtime then fuses
DQ -> Conv -> Q into QLinearConv (and likewise Add, MatMul, pooling), so the INT8 model runs the
very grids the simulation used. The legacy TorchScript-based exporter (dynamo=False) is used: it
handles the fake-quant ops and writes one self-contained file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["export_onnx", "export_qdq"]

OPSET = 17


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """Write `model` to `path` with a dynamic batch dimension ("x" -> "logits")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, *input_shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            model, (example,), str(path), opset_version=OPSET, dynamo=False,
            input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def export_qdq(sim, input_shape: tuple[int, ...], path: Path, activations: str = "u8") -> Path:
    """Write the calibrated QuantSim as a QDQ ONNX model (uint8 or int8 activations, int8 weights)."""
    with sim.torch_fake_quant(activations):
        return export_onnx(sim, input_shape, path)
