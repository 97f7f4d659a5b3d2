"""The numbers on the graph's nodes, every one measured on the model in front of the user.

One calibrated QuantSim (`calibrated_sim`: recovery steps, statistics pass, each layer's range) is run twice over a
few of the calibration images (the probe): once in float (`fp32_reference`: the FP32 model with BN folded, the weights from before any rounding step) and once
quantized, node by node through an fx Interpreter. Each kept node's output is compared between the two runs
(SQNR) and its range recorded; the float outputs of one chunk of images are all that is held at once. Activation
quantizers add their clip range and its estimated clipping and rounding error (the same RangeResult the
Calibration page shows); the QuantConfig gives bits and float-or-quantized; a SensitivityReport, when given,
gives "only this layer quantized".
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import fx

from qcore.analysis.evaluate import _sqnr
from qcore.analysis.graph import GraphNode, ModelGraph, NodeMetrics, graph_edges, graph_nodes, node_kind
from qcore.analysis.reports import LayerSensitivity
from qcore.quant.build import calibrated_sim
from qcore.quant.progress import Msg, Progress, silent, span
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import ActQuantizer, Mode, QuantSim, QuantWeightLayer, image_count
from qcore.quant.recovery.reference import fp32_reference

__all__ = ["PROBE_IMAGES", "model_graph", "graph_of_sim", "measure_nodes", "weight_summary", "sensitivity_rows",
           "calibration_batches", "loaded_model_graph", "stats_name"]

PROBE_IMAGES = 16  # calibration images the float and quantized runs are compared on
CHUNK_BYTES = 256 * 2**20  # float outputs of one chunk of probe images held at once


class _Recorder(fx.Interpreter):
    """Runs the graph node by node and hands each floating-point tensor output to `seen(name, tensor)`."""

    def __init__(self, gm: fx.GraphModule, names: set[str], seen):
        super().__init__(gm)
        self.names, self.seen = names, seen

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n.name in self.names and isinstance(out, torch.Tensor) and out.is_floating_point():
            self.seen(n.name, out.detach())
        return out


def _chunk(sim: QuantSim, x: torch.Tensor, names: set[str], sums: dict[str, list[float]]) -> int:
    """Add one chunk's (signal, noise, float min, float max, quant min, quant max) per node into `sums`;
    returns the bytes the chunk's float outputs took."""
    ref: dict[str, torch.Tensor] = {}
    with fp32_reference(sim):  # copies: an in-place op later in the graph (ReLU(inplace=True)) would change them
        _Recorder(sim.model, names, lambda name, out: ref.__setitem__(name, out.clone())).run(x)
    held = sum(t.numel() * t.element_size() for t in ref.values())

    def compare(name: str, out: torch.Tensor) -> None:
        r = ref.pop(name, None)
        if r is None or r.shape != out.shape:
            return
        r, q = r.double(), out.double()
        row = [float((r * r).sum()), float(((r - q) ** 2).sum()), float(r.min()), float(r.max()), float(q.min()),
               float(q.max())]
        old = sums.get(name)
        sums[name] = row if old is None else [old[0] + row[0], old[1] + row[1], min(old[2], row[2]),
                                              max(old[3], row[3]), min(old[4], row[4]), max(old[5], row[5])]

    _Recorder(sim.model, names, compare).run(x)
    return held


@torch.no_grad()
def measure_nodes(sim: QuantSim, probe: torch.Tensor, progress: Progress = silent) -> dict[str, list[float]]:
    """Per kept fx node: [signal, noise, float min, float max, quant min, quant max] over the probe images, which
    go through in chunks whose float outputs stay within CHUNK_BYTES (measured on the first image)."""
    modules = dict(sim.model.named_modules())
    names = {n.name for n in sim.model.graph.nodes if node_kind(n, modules) is not None}
    sums: dict[str, list[float]] = {}
    per_image = _chunk(sim, probe[:1], names, sums)
    step = max(1, CHUNK_BYTES // max(1, per_image))
    for i in range(1, len(probe), step):
        progress(i / len(probe), Msg("comparing float and quantized outputs: {n}/{total} images", n=i, total=len(probe)))
        _chunk(sim, probe[i: i + step], names, sums)
    return sums


def _precision(bits: int | None, dtype: str) -> tuple[int, str]:
    return (bits, f"int{bits}") if dtype == "int" else (16 if dtype in ("fp16", "bf16") else 32, dtype)


def _own_metrics(sim: QuantSim, node: GraphNode, module) -> dict:
    """What the config and the calibration say about a layer or a quantizer."""
    if isinstance(module, QuantWeightLayer):
        cfg = sim.config.for_layer(node.layer)
        bits, precision = _precision(cfg.weight_bits, cfg.weight_dtype) if module.enabled else (32, "fp32")
        return {"bits": bits, "precision": precision, "quantized": 1.0 if module.enabled else 0.0}
    if not isinstance(module, ActQuantizer):
        return {}
    on = module.mode == Mode.QUANT and module.dtype != "fp32"
    bits, precision = _precision(module.scheme.bits if module.scheme else None, module.dtype) if on else (32, "fp32")
    out = {"bits": bits, "precision": precision, "quantized": 1.0 if on else 0.0}
    r = module.range if on and module.dtype == "int" else None
    if r is not None:
        out.update(clip_min=r.clip_min, clip_max=r.clip_max, clip_error=r.clip_error, rounding_error=r.rounding_error,
                   method=r.method)
    return out


def _with_metrics(sim: QuantSim, node: GraphNode, module, row: list[float] | None,
                  sensitivity: dict[str, float]) -> GraphNode:
    values = _own_metrics(sim, node, module)
    if row is not None:
        values.update(float_min=row[2], float_max=row[3], quant_min=row[4], quant_max=row[5])
        if node.kind != "input":
            values["sqnr_db"] = _sqnr(row[0], row[1])
    if node.layer is not None and node.layer in sensitivity:
        values["sensitivity"] = sensitivity[node.layer]
    return replace(node, metrics=NodeMetrics(**values))


def graph_of_sim(sim: QuantSim, probe: torch.Tensor, model: str, calib_images: int,
                 sensitivity: list[LayerSensitivity] | None = None, sensitivity_from: str | None = None,
                 progress: Progress = silent) -> ModelGraph:
    """The graph of a calibrated sim with every node's numbers (the sim is only run, never changed);
    `sensitivity`: a sensitivity sweep's rows (SensitivityReport.layers), `sensitivity_from` says which sweep."""
    sums = measure_nodes(sim, probe, progress)
    kept = {n.id for n in graph_nodes(sim.model) if n.kind in ("input", "output") or n.id in sums}
    nodes = graph_nodes(sim.model, kept)
    by_layer = {r.name: r.only_this_quantized for r in sensitivity or []}
    modules = {n.name: sim.model.get_submodule(n.target) for n in sim.model.graph.nodes if n.op == "call_module"}
    nodes = [_with_metrics(sim, n, modules.get(n.id), sums.get(n.id), by_layer) for n in nodes]
    matched = any(n.metrics.sensitivity is not None for n in nodes)  # a sweep of another model matches nothing
    return ModelGraph(model, sim.config.to_dict(), calib_images, len(probe), tuple(nodes),
                      tuple(graph_edges(sim.model, kept)), sensitivity_from if matched else None)


def model_graph(model, batches, config: QuantConfig | None = None, name: str = "model",
                sensitivity: list[LayerSensitivity] | None = None, sensitivity_from: str | None = None,
                probe_images: int = PROBE_IMAGES, progress: Progress | None = None) -> tuple[ModelGraph, QuantSim]:
    """Calibrate a sim of `model` (an nn.Module, never changed: the sim works on a copy) on `batches`, then
    measure its graph on the first `probe_images` calibration images. Returns the graph and the sim (its
    statistics are what the page's histograms draw)."""
    progress = progress or silent
    sim = calibrated_sim(model, config or QuantConfig(), batches, span(progress, 0.0, 0.6))
    probe = batches.head(probe_images) if hasattr(batches, "head") else torch.cat(list(batches))[:probe_images]
    graph = graph_of_sim(sim, probe, name, image_count(batches), sensitivity, sensitivity_from, span(progress, 0.6, 1.0))
    progress(1.0, Msg("graph of {n} nodes measured", n=len(graph.nodes)))
    return graph, sim


def weight_summary(sim: QuantSim, layer: str, sample: int = 20_000) -> dict:
    """A layer's BN-folded weight as deployed: a fixed random sample of its values and each output channel's
    min and max (what the page's weight figures draw)."""
    w = sim.weight_layers[layer].layer.weight.detach()
    flat = w.reshape(w.shape[0], -1)
    values = w.flatten()
    if values.numel() > sample:
        values = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[:sample]]
    return {"values": values.tolist(), "min": flat.min(1).values.tolist(), "max": flat.max(1).values.tolist()}



def sensitivity_rows(report: dict) -> list[LayerSensitivity]:
    """The per-layer rows of a sensitivity report's JSON (`python -m qcore sensitivity --out FILE`)."""
    try:
        return [LayerSensitivity(**row) for row in report["layers"]]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a sensitivity report (python -m qcore sensitivity --out FILE): {exc}") from None


def calibration_batches(loaded, data: str | None, size: int, seed: int = 0):
    """`size` calibration images of the model's data (train split, chosen by the seed), as model-ready batches."""
    from qcore.zoo.data import calibration_subset
    from qcore.zoo.inputs import batches, decode_for, default_data

    calib = calibration_subset(data or default_data(loaded), size, seed, decode_for(loaded))
    return batches(calib.images, loaded.spec.preprocess)


def loaded_model_graph(model, config: QuantConfig | None = None, data: str | None = None, calib_size: int = 64,
                       seed: int = 0, sensitivity: list[LayerSensitivity] | None = None,
                       sensitivity_from: str | None = None, progress: Progress | None = None) -> tuple[ModelGraph, QuantSim]:
    """`model_graph` of a loaded model (qcore.zoo.models.LoadedModel, read-only) on `calib_size` images of its
    data: what the Graph page runs as a job and `python -m qcore graph` runs."""
    batches = calibration_batches(model, data, calib_size, seed)
    return model_graph(model.module, batches, config, model.name, sensitivity, sensitivity_from, progress=progress)


def stats_name(sim: QuantSim, node: GraphNode) -> str | None:
    """The activation quantizer whose calibration statistics describe `node`'s output: its own (a quantizer), the
    layer's output quantizer (a conv/linear: the same name), an add's; None where the sim has none."""
    name = node.layer if node.kind in ("quant", "conv", "linear") else node.id if node.kind == "add" else None
    return name if name in sim.stats else None
