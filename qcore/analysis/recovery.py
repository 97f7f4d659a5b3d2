"""The recovery experiment: plain PTQ, then the chosen steps added one at a time, each combination
calibrated and evaluated end to end on the same images (`python -m qcore recover`, the page).

Every combination builds its own sim from the shared (read-only) model, so rows are independent and
each one is exactly what sensitivity, QAT and deploy would build from that config.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Sequence

import torch

from qcore.analysis.evaluate import layer_errors, logits, scores
from qcore.analysis.experiments import channel_ranges
from qcore.analysis.reports import RecoveryReport, RecoveryRow
from qcore.quant.progress import Msg, Progress, silent, span
from qcore.quant.qconfig import QuantConfig, RecoveryStep
from qcore.quant.quantsim import QuantSim
from qcore.quant.build import calibrated_sim
from qcore.zoo.inputs import Inputs, prepare_inputs
from qcore.zoo.models import LoadedModel

__all__ = ["recover", "measure_steps", "rounding_table", "block_table"]


def measure_steps(inp: Inputs, config: QuantConfig, steps: Sequence[RecoveryStep], fp32_preds: torch.Tensor,
                  progress: Progress | None = None) -> tuple[RecoveryRow, QuantSim]:
    """One combination: calibrate with `steps`, then accuracy, FP32 agreement, per-layer SQNR."""
    say = progress or silent
    start = time.perf_counter()
    sim = calibrated_sim(inp.loaded.module, replace(config, recovery=tuple(steps)), inp.calib_batches,
                              span(say, 0.0, 0.8))
    seconds = time.perf_counter() - start
    say(0.8, Msg("evaluating"))
    result = scores(logits(sim, inp.eval_batches), inp.labels)
    errors = layer_errors(sim, inp.eval_batches[0][:128])
    sqnr = {k: (round(v["sqnr_db"], 2) if math.isfinite(v["sqnr_db"]) else None) for k, v in errors.items()}
    row = RecoveryRow([s.name for s in steps], result.top1, float((result.predictions == fp32_preds).float().mean()),
                      round(seconds, 2), {r.name: r.seconds for r in sim.recovery_results}, sqnr,
                      {r.name: r.changes for r in sim.recovery_results})
    return row, sim


def recover(
    model: str | LoadedModel,
    steps: Sequence[RecoveryStep],
    config: QuantConfig | None = None,
    data: str | None = None,
    calib_size: int = 512,
    eval_size: int | None = None,
    seed: int = 0,
    cumulative: bool = True,
    progress: Progress | None = None,
) -> tuple[RecoveryReport, QuantSim]:
    """Plain PTQ and each prefix of `steps` (or, with cumulative=False, each step alone, then all of them);
    returns the report and the sim of the last row (the full combination)."""
    say = progress or silent
    config = (config or QuantConfig()).resolved()
    inp = prepare_inputs(model, data, calib_size, eval_size, seed)
    fp32 = scores(logits(inp.loaded.module, inp.eval_batches), inp.labels)
    combos = [list(steps[: i + 1]) for i in range(len(steps))] if cumulative else (
        [[s] for s in steps] + ([list(steps)] if len(steps) > 1 else []))
    combos = [[]] + combos
    rows, sim, before = [], None, {}
    for i, combo in enumerate(combos):
        label = "+".join(s.name for s in combo) or "plain PTQ"
        row, sim = measure_steps(inp, config, combo, fp32.predictions,
                                 span(say, i / len(combos), (i + 1) / len(combos)))
        say((i + 1) / len(combos), Msg("{steps}: {accuracy:.2%}", steps=label, accuracy=row.accuracy))
        rows.append(row)
        before = before or channel_ranges(sim)
    report = RecoveryReport(
        identity=inp.run_identity(), inventory=sim.layer_inventory(), eval_size=inp.eval_size, config=replace(config, recovery=tuple(steps)).to_dict(),
        fp32_accuracy=fp32.top1, baseline_accuracy=rows[0].accuracy, rows=rows, weights_before=before,
        weights_after=channel_ranges(sim))
    return report, sim


def rounding_table(rows: list[RecoveryRow]) -> list[dict]:
    """Per layer: output MSE of round-to-nearest, AdaRound and GPTQ (where a row ran them), and their flips."""
    table: dict[str, dict] = {}
    for row in rows:
        for step in ("adaround", "gptq"):
            for layer, r in row.changes.get(step, {}).get("layers", {}).items():
                entry = table.setdefault(layer, {"layer": layer, "nearest MSE": r["mse_nearest"]})
                entry[f"{step} MSE"], entry[f"{step} flipped"] = r["mse"], r["flipped"]
    return list(table.values())


def block_table(rows: list[RecoveryRow]) -> list[dict]:
    """Per block of the last row that ran BRECQ: its layers, block-output MSE of round-to-nearest and of the
    reconstruction (on the first calibration images), weights flipped, activation step sizes whose learned value
    it kept (0 where the learned ones raised its error), images it was fitted on."""
    ran = [row for row in rows if "brecq" in row.changes]
    if not ran:
        return []
    return [{"block": name, "layers": ", ".join(r["layers"]), "nearest MSE": r["mse_nearest"], "brecq MSE": r["mse"],
             "flipped": r["flipped"], "steps learned": len(r.get("activation_steps", {})) if r.get("activation_steps_kept")
             else 0, "images": r["images"]} for name, r in ran[-1].changes["brecq"]["blocks"].items()]
