"""Quantization-aware training: fine-tune a calibrated QuantSim with straight-through gradients.

The recipe follows the literature (Krishnamoorthi 2018; Nagel et al. 2021 white paper):
- start from the FP32 weights, calibrated exactly as PTQ would be (the user's config and method);
- AdamW at about 1% of the model's original training rate, annealed to zero on a cosine;
- a few short "epochs": the run's steps split into rounds, each followed by an evaluation of
  the fake-quant model and of the real INT8 model built from it (ONNX Runtime, U8S8) with its
  measured batch-1 latency.
BatchNorm is folded into the convolutions (the QuantSim does this, as deployed INT8 models do). By
default it stays folded, its statistics frozen from step 0; with `bn_freeze_after=K` the BNs come
back for the first K steps and train their statistics in front of the folded, quantized weight
(`bn.TrainedBN`), then fold again and freeze. Activation ranges follow `RangeMode`: fixed
(calibrated), observed (moving-average min/max for the first `freeze_after` steps, then frozen) or
learned (LSQ).

`run_qat` never touches streamlit: it reports through `progress(fraction, message)` (which may
raise to cancel; it is called at least every training step and every evaluation batch) and
streams metric rows through `on_metric(row)`. Every training step holds `MACHINE_LOCK` so a
latency measurement elsewhere in the process never overlaps it.

Stages: `_calibrate` and `_baseline` (epoch 0), `_Trainer.run` (the loop with its evaluation
rounds), `_finalize` (ranges written back), `_final_scores` (the comparison on the final set).
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from qcore.quant.progress import Msg, Progress, silent
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.quant.build import calibrated_sim
from qcore.train.device import resolve_device
from qcore.train.qat.loop import Trainer, accuracy
from qcore.train.qat.probe import Int8Probe, step_overhead
from qcore.train.qat.recipe import RANGE_MODES, QATRecipe, default_lr
from qcore.train.qat.report import QATEpochRow, QATReport, QATStepRow
from qcore.zoo.data import ImageSet, eval_subset, load_dataset, subset
from qcore.zoo.inputs import Inputs, batches, decode_for, fp32_predictions, prepare_inputs
from qcore.zoo.models import LoadedModel

__all__ = ["RANGE_MODES", "QATEpochRow", "QATRecipe", "QATReport", "QATResult", "QATStepRow", "default_lr", "run_qat",
           "step_overhead"]


class QATResult(NamedTuple):
    """The report (plain data) and the fine-tuned sim (a live model, kept out of the report)."""

    report: QATReport
    sim: QuantSim


def _training_set(inp: Inputs, size: int | None, seed: int) -> ImageSet:
    """The fine-tuning images. Unlabeled images train towards the FP32 model's own top-1 (hard-label
    self-distillation): the only target there is, and the one the report scores against."""
    train = subset(load_dataset(inp.data, "train", decode_for(inp.loaded)), size, seed)
    if inp.scored_by == "labels":
        return train
    pseudo = fp32_predictions(inp.loaded.module, batches(train.images, inp.loaded.spec.preprocess))
    return ImageSet(train.name, train.images, pseudo, inp.loaded.spec.class_names)


def _final_set(inp: Inputs, data_name: str, final_eval_size, eval_size, seed: int):
    """(batches, labels) of the final comparison: the monitor set itself when the sizes agree."""
    if final_eval_size == eval_size:
        return inp.eval_batches, inp.labels
    evald = eval_subset(data_name, final_eval_size, seed, decode_for(inp.loaded))
    xs = batches(evald.images, inp.loaded.spec.preprocess)
    return xs, evald.labels if inp.scored_by == "labels" else fp32_predictions(inp.loaded.module, xs)


def _final_scores(trainer: Trainer, final_set, same_set: bool, say: Progress) -> dict:
    """FP32 / PTQ / QAT (fake-quant and real INT8) on the final set, with measured batch-1 latency of
    PTQ and QAT INT8 against ONNX Runtime FP32 and sizes on disk. On the monitor set itself the numbers
    already measured are used, and INT8 models already built are reused, not exported again."""
    say(0.9, Msg("final evaluation"))
    xs, labels = final_set
    first, last, probe = trainer.history[0], trainer.history[-1], trainer.probe
    qat_runner = trainer.built.get("latest") or probe.build(trainer.sim, "final")
    ptq_runner = (trainer.built.get("ptq") or probe.build(trainer.ptq_sim, "ptq")) if qat_runner is not None else None

    def acc(model, what, known):
        if same_set and known is not None:
            return known
        return accuracy(model, xs, labels, lambda f, m: say(0.92, m), what)

    out = {"fp32_accuracy": acc(trainer.loaded.module, "FP32 (final)", first.fp32_accuracy),
           "ptq_accuracy": acc(trainer.ptq_sim, "PTQ fake-quant (final)", first.fake_quant_accuracy),
           "qat_accuracy": acc(trainer.sim, "QAT fake-quant (final)", last.fake_quant_accuracy),
           "int8_accuracy": None, "ptq_int8_accuracy": None, "eval_images": len(labels),
           "latency_ms": {}, "size_bytes": {"fp32_onnx": probe.fp32.size_bytes}}
    if qat_runner is not None:
        out["int8_accuracy"] = acc(qat_runner, "QAT INT8 (final)", last.int8_accuracy)
        out["ptq_int8_accuracy"] = acc(ptq_runner, "PTQ INT8 (final)", first.int8_accuracy)
        out["latency_ms"] = probe.measure({"ptq_int8": ptq_runner, "qat_int8": qat_runner}, xs[0][:1],
                                          lambda f, m: say(0.97, m))
        out["size_bytes"].update(ptq_int8_onnx=ptq_runner.size_bytes, qat_int8_onnx=qat_runner.size_bytes)
        trainer.final_onnx = qat_runner.path
    return out


def _write_files(trainer: Trainer, config: QuantConfig, out_dir: Path) -> list[str]:
    files = []
    if trainer.final_onnx is not None:
        shutil.copyfile(trainer.final_onnx, out_dir / "qat_int8.onnx")
        files.append("qat_int8.onnx")
    (out_dir / "qat_config.json").write_text(config.to_json() + "\n")
    return [*files, "qat_config.json"]


def run_qat(
    model: str | LoadedModel = "fm_resnet",
    config: QuantConfig | None = None,
    recipe: QATRecipe | None = None,
    data: str | None = None,
    calib_size: int = 512,
    eval_size: int | None = 2000,
    final_eval_size: int | None = None,
    seed: int = 0,
    out_dir: str | Path = "out/qat",
    threads: int | None = None,
    progress: Progress | None = None,
    on_metric: Callable[[QATEpochRow | QATStepRow], None] | None = None,
    nproc: int = 1,
    device: str = "cpu",
    ranks=None,
) -> QATResult | None:
    """Fine-tune with fake quantization; returns the report and the fine-tuned sim.

    Curves are measured on `eval_size` test images after every epoch; the final FP32 / PTQ / QAT /
    INT8 accuracies on `final_eval_size` test images (None: the whole test split). `nproc` > 1 runs
    DistributedDataParallel over that many processes (qcore.train.ddp; `ranks` is set inside each of
    them, and only rank 0 returns a result); `device` is cpu, cuda or auto for the training steps.
    """
    if nproc > 1 and ranks is None:
        from qcore.train.ddp import launch  # noqa: PLC0415 (spawns processes: imported only when asked)

        return launch(run_qat, nproc, device, progress, on_metric, model=model, config=config, recipe=recipe, data=data,
                      calib_size=calib_size, eval_size=eval_size, final_eval_size=final_eval_size, seed=seed,
                      out_dir=out_dir, threads=threads)
    lead = ranks is None or ranks.rank == 0
    say = (progress or silent) if lead else silent
    recipe, config = recipe or QATRecipe(), config or QuantConfig()
    threads = threads or torch.get_num_threads()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(seed)
    say(0.0, Msg("loading model and data"))
    inp = prepare_inputs(model, data, calib_size, eval_size, seed)
    train = _training_set(inp, recipe.train_size, seed)
    if len(train) == 0:
        raise ValueError("the training set is empty")
    say(0.01, Msg("calibrating (one statistics pass)"))
    sim = calibrated_sim(inp.loaded.module, config, inp.calib_batches)
    sim.keep_current_weights()  # training starts from the weights as the sim runs them
    probe = Int8Probe(inp.loaded, out_dir, threads, recipe.latency_iters) if lead else None
    trainer = Trainer(inp, train, sim, copy.deepcopy(sim), probe, recipe, seed, say,
                      (on_metric if lead else None) or (lambda row: None), ranks,
                      ranks.device if ranks is not None else resolve_device(device))
    trainer.baseline()
    trainer.run()
    trainer.finalize()
    if not lead:
        return None
    final = _final_scores(trainer, _final_set(inp, inp.data, final_eval_size, eval_size, seed),
                          final_eval_size == eval_size, say)
    report = _report(inp, trainer, sim.config, recipe, final, started, threads, ranks, probe, out_dir)
    say(1.0, Msg("done"))
    return QATResult(report, trainer.sim)


def _report(inp, trainer: Trainer, config: QuantConfig, recipe: QATRecipe, final: dict, started: float, threads: int,
            ranks, probe: Int8Probe, out_dir: Path) -> QATReport:
    """The finished run's report (rank 0), and its files written."""
    notes = trainer.notes + ([probe.note] if probe.note else [])
    return QATReport(
        identity=inp.run_identity(), inventory=trainer.sim.layer_inventory(), config=config.to_dict(),
        recipe={**asdict(recipe), "lr": trainer.lr, "steps": trainer.total},
        **final, seconds=round(trainer.finetune_s, 1), total_seconds=round(time.perf_counter() - started, 1),
        step_overhead_vs_fp32=trainer.overhead["ratio"], step_times=trainer.overhead, steps=trainer.total,
        monitor_images=len(inp.labels), history=trainer.history, losses=trainer.steps_log, threads=threads,
        distributed=ranks.describe() if ranks is not None else {"engine": "local", "world": 1,
                                                                 "device": str(trainer.device)},
        notes=notes, files=_write_files(trainer, trainer.sim.config, out_dir), out_dir=str(out_dir))
