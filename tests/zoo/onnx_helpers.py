"""ONNX files as torch.onnx.export writes them, and the checks an imported file must pass (shared by the
exporter-matrix tests and scripts/onnx_matrix.py, which runs the whole matrix)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

EXPORTERS = ("legacy", "dynamo")


def export_onnx(model: nn.Module, shape, path: Path, exporter: str, opset: int | None,
                external_data: bool = False, batch: int = 1) -> Path:
    """torch.onnx.export as a user calls it, with a dynamic batch axis (qcore runs batch 1 and 2).
    `external_data=True` is the dynamo exporter's default (weights in a side file `path.data`). `batch`: the
    example's batch size (torch.export cannot keep the batch of convnext dynamic from a batch-1 example)."""
    x = torch.randn(batch, *shape)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=opset, input_names=["x"],
                              dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
                              external_data=external_data, verbose=False)
        elif exporter == "legacy":
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}})
        else:
            raise ValueError(exporter)
    return path


def file_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def ort_run(path: Path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def import_and_check(path: Path, shape) -> dict:
    """Import through qcore, compare with onnxruntime on the same file at batch 1 and 2, then calibrate a
    QuantSim on 2 images and run it. Returns the measurements; asserts nothing (callers decide)."""
    from qcore.quant.qconfig import QuantConfig
    from qcore.quant.build import calibrated_sim
    from qcore.zoo.onnx_import import load_onnx

    gm = load_onnx(path)
    out = {"folded": gm.meta["onnx_import"]["folded_shape_nodes"], "rel_diff": 0.0, "max_abs_diff": 0.0}
    for batch in (1, 2):
        x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
        ref = ort_run(path, x)
        with torch.no_grad():
            got = gm(x).numpy()
        diff = float(np.abs(got - ref).max())
        out["max_abs_diff"] = max(out["max_abs_diff"], diff)
        out["rel_diff"] = max(out["rel_diff"], diff / max(float(np.abs(ref).max()), 1e-6))
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(7))
    sim = calibrated_sim(gm, QuantConfig(), [x])
    with torch.no_grad():
        q = sim(x)
    out["quant_finite"] = bool(torch.isfinite(q).all())
    out["weight_layers"] = len(sim.weight_layers)
    out["float_layers"] = list(sim.layer_inventory().float_layers)
    out["torch_layers"] = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in gm.modules())
    return out
