"""Partial and mixed-precision quantization, on top of a sensitivity sweep.

The Sensitivity page's workflow as plain functions, so the page only reads widgets and draws:
sweep every layer (`sweep_layers`), turn a per-layer precision choice into a QuantConfig
(`config_from_precisions`), measure that config's accuracy and real INT8 latency
(`measure_config`), and search for the fewest float layers that meet an accuracy budget, with
each step's latency and weight size (`greedy_search`). Latency is measured by a probe the caller
passes in (qcore.runtime.partial.latency_probe), so this module stays below the runtime.

`progress(fraction, message)` is the callback every long function takes (a Job's `update`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Callable, NamedTuple

from qcore.analysis.reports import GreedyResult, SensitivityReport
from qcore.analysis.sensitivity import Prepared, evaluate_config, float_layers, greedy_fallback, prepare, sweep, weight_bytes
from qcore.quant.progress import Msg, Progress, silent
from qcore.quant.qconfig import QuantConfig

__all__ = ["PRECISIONS", "Swept", "ConfigMeasurement", "config_from_precisions", "sweep_layers", "measure_config",
           "greedy_search"]

# What a layer can be set to, in the order the page offers them.
PRECISIONS = ("int8", "int4 weights", "A16 activations", "float")
WEIGHT_KINDS = ("conv", "linear")  # the layer kinds that have weights (an add or activation has none)

ProbeFactory = Callable[..., Callable[[QuantConfig], float]]  # (prepared, out_dir) -> timer with .fp32_ms


class Swept(NamedTuple):
    """A sweep's report and the prepared state (calibrated sim, shared ranges, inputs) it ran on, so
    later measurements of partial configs reuse it instead of calibrating again."""

    prepared: Prepared
    report: SensitivityReport


@dataclass
class ConfigMeasurement:
    """One partial / mixed-precision config, measured: accuracy, real INT8 and FP32 latency (batch 1,
    the same rounds), weight storage and the layers it keeps in float."""

    accuracy: float
    latency_ms: float
    fp32_ms: float
    weight_bytes: int
    config: dict
    float_layers: list[str]

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.latency_ms


def config_from_precisions(base: QuantConfig, precisions: dict[str, str], kinds: dict[str, str]) -> QuantConfig:
    """`base` with each layer set to its precision: "float" keeps the layer in float, "int4 weights"
    gives a conv or linear 4-bit weights (ignored for layers without weights), "A16 activations"
    16-bit (simulated) activations, "int8" leaves the layer as in `base`.

    `precisions` maps layer name -> one of PRECISIONS; `kinds` maps layer name -> its point kind
    ("conv", "linear", "add", "act"). Raises ValueError for an unknown precision.
    """
    cfg = base
    for layer, precision in precisions.items():
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r} for {layer} (choose from {', '.join(PRECISIONS)})")
        if precision == "float":
            cfg = cfg.with_layer(layer, enabled=False)
        elif precision == "int4 weights" and kinds.get(layer) in WEIGHT_KINDS:
            cfg = cfg.with_layer(layer, weight_bits=4)
        elif precision == "A16 activations":
            cfg = cfg.with_layer(layer, act_bits=16)
    return cfg


def sweep_layers(model, config: QuantConfig | None = None, data: str | None = None, calib_size: int = 512,
                 eval_size: int | None = 1000, seed: int = 0, progress: Progress | None = None,
                 executor=None) -> Swept:
    """One statistics pass and the two-sided per-layer sweep (its items run by `executor`; None: here),
    with the state it ran on."""
    (progress or silent)(0.0, "calibrating (one statistics pass)")
    prepared = prepare(model, config, data=data, calib_size=calib_size, eval_size=eval_size, seed=seed)
    return Swept(prepared, sweep(prepared, progress=progress, executor=executor))


def measure_config(prepared, config: QuantConfig, latency_probe: ProbeFactory,
                   progress: Progress | None = None) -> ConfigMeasurement:
    """Accuracy of `config` on the prepared images, its real INT8 latency at batch 1 timed against
    FP32 in the same rounds, its weight storage and its float layers.

    `latency_probe(prepared, out_dir)` builds the timer (qcore.runtime.partial.latency_probe: the
    analysis layer does not import the runtime); its models go to a temporary folder.
    """
    say = progress or silent
    with prepared.lock, tempfile.TemporaryDirectory() as tmp:
        say(0.1, Msg("accuracy"))
        acc = evaluate_config(prepared, config)
        say(0.5, Msg("building the INT8 model and timing it"))
        probe = latency_probe(prepared, tmp)
        ms = probe(config)
    return ConfigMeasurement(acc["accuracy"], ms, probe.fp32_ms[-1], weight_bytes(prepared, config), config.to_dict(),
                             [n for n, c in config.layers if not c.enabled])


def greedy_search(prepared, report, budget: float, max_float: int, latency_probe: ProbeFactory,
                  progress: Progress | None = None) -> GreedyResult:
    """The greedy float fallback (`budget`: allowed accuracy drop vs FP32, as a fraction) with every
    curve point's measured INT8 latency, the FP32 latency of the same rounds and its weight bytes
    filled in (`latency_probe` as for `measure_config`)."""
    with prepared.lock, tempfile.TemporaryDirectory() as tmp:
        probe = latency_probe(prepared, tmp)
        result = greedy_fallback(prepared, report, budget=budget, max_float=int(max_float), latency=probe,
                                 progress=progress)
    for point, fp32_ms in zip(result.curve, probe.fp32_ms):
        point.fp32_ms = fp32_ms
        point.weight_bytes = weight_bytes(prepared, float_layers(prepared.base_config, point.float_layers))
    return result
