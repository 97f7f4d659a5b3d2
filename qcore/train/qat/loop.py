"""The QAT training loop: epoch 0 (the PTQ baseline), steps with their evaluation rounds, and the end."""

from __future__ import annotations

import math
import time
from typing import Callable

import torch

from qcore.analysis.evaluate import top1
from qcore.quant.progress import Msg, Progress
from qcore.quant.quantsim import QuantSim, RangeMode
from qcore.runtime.machine import MACHINE_LOCK
from qcore.train.builtin import augment
from qcore.train.qat.bn import attach_trained_bn, fold_trained_bn
from qcore.train.qat.probe import Int8Probe, step_overhead, train_step
from qcore.train.qat.recipe import QATRecipe, default_lr
from qcore.train.qat.report import QATEpochRow, QATStepRow
from qcore.zoo.data import ImageSet
from qcore.zoo.inputs import Inputs

__all__ = ["Trainer", "accuracy"]


def accuracy(model, xs: list[torch.Tensor], labels: torch.Tensor, say: Progress, what: str) -> float:
    """Top-1 of `model`, reporting each evaluated batch as 'evaluating WHAT: n/N images'."""
    return top1(model, xs, labels, lambda f, msg: say(None, Msg("evaluating {what}: {detail}", what=what, detail=msg)))


class Trainer:
    """One QAT run's state: the sim being trained, its optimizer and schedule, and what was measured."""

    def __init__(self, inp: Inputs, train: ImageSet, sim: QuantSim, ptq_sim: QuantSim, probe: Int8Probe,
                 recipe: QATRecipe, seed: int, say: Progress, emit: Callable[[QATEpochRow | QATStepRow], None],
                 ranks=None,
                 device: str = "cpu"):
        self.inp, self.loaded, self.train, self.sim, self.ptq_sim = inp, inp.loaded, train, sim, ptq_sim
        self.ranks = ranks  # qcore.train.ddp.Ranks under torch.distributed; None: one process
        self.lead = ranks is None or ranks.rank == 0  # the rank that evaluates, measures and reports
        self.device = torch.device(device)  # where training steps run; evaluations and exports stay on the CPU
        self.probe, self.recipe, self.say, self.emit = probe, recipe, say, emit
        self.gen = torch.Generator().manual_seed(seed)
        self.lr = recipe.lr or default_lr(inp.loaded, recipe.lr_fraction)
        self.built: dict = {}  # the INT8 models of PTQ and of the latest epoch, reused by the final report
        self.history: list[QATEpochRow] = []
        self.steps_log: list[QATStepRow] = []
        self.notes: list[str] = [sim.unsupported_note()] if sim.unsupported_note() else []
        self.final_onnx = None
        self.finetune_s = 0.0

    # --- measurements ------------------------------------------------------------------------------
    def _int8_round(self, tag: str) -> dict:
        """The real INT8 model built from the sim as it is now: accuracy and batch-1 latency."""
        runner = self.probe.build(self.sim, tag) if self.recipe.int8_each_epoch else None
        if runner is None:
            return {}
        self.built["ptq" if tag == "ptq" else "latest"] = runner
        xs, labels = self.inp.eval_batches, self.inp.labels
        acc = accuracy(runner, xs, labels, self.say, f"INT8 ({tag})")
        ms = self.probe.measure({"int8": runner}, xs[0][:1], self.say)
        return {"int8_accuracy": acc, "int8_latency_ms": ms["int8"], "fp32_ort_latency_ms": ms["fp32_ort"]}

    def _epoch_row(self, epoch: int, step: int, acc: float, int8_row: dict, seconds: float) -> QATEpochRow:
        row = QATEpochRow(epoch, step, acc, self.fp32_acc, self.ptq_acc, **int8_row, seconds=seconds)
        self.history.append(row)
        self.emit(row)
        return row

    def _batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The global batch, augmented; under torch.distributed this rank's share of it (every rank draws
        the same global batch from the same generator, as DistributedSampler strides one permutation, so
        the augmentation too is the single-process run's)."""
        raw = self.train.images[idx]
        pre = self.loaded.spec.preprocess
        x, y = pre(augment(raw, self.gen) if self.recipe.augment else raw), self.train.labels[idx]
        if self.ranks is not None:
            x, y = x[self.ranks.rank::self.ranks.world], y[self.ranks.rank::self.ranks.world]
        return x.to(self.device), y.to(self.device)

    def baseline(self) -> None:
        """Epoch 0: FP32 and PTQ accuracy, the PTQ INT8 model, the step cost, and the schedule (measured by
        the lead rank; the others draw the same measurement batch, to keep their generators in step, and
        receive the step count)."""
        if not self.lead:
            self._batch(torch.randint(0, len(self.train), (self.recipe.batch_size,), generator=self.gen))
            self.total = self.ranks.broadcast_int(0)
            self.bounds = self.recipe.epoch_bounds(self.total)
            return
        xs, labels, say = self.inp.eval_batches, self.inp.labels, self.say
        self.fp32_acc = accuracy(self.loaded.module, xs, labels, lambda f, m: say(0.02, m), "FP32")
        round_start = time.perf_counter()
        self.ptq_acc = accuracy(self.sim, xs, labels, lambda f, m: say(0.03, m), "PTQ fake-quant")
        int8_row = self._int8_round("ptq")
        round_s = time.perf_counter() - round_start
        self._epoch_row(0, 0, self.ptq_acc, int8_row, 0.0)
        say(0.05, Msg("measuring a training step: FP32 vs fake-quant, interleaved"))
        x, y = self._batch(torch.randint(0, len(self.train), (self.recipe.batch_size,), generator=self.gen))
        self.overhead = step_overhead(self.loaded.module, self.sim, x, y)
        self.total = self.recipe.total_steps(self.overhead["qat_step_s"], round_s)
        if self.ranks is not None:
            self.total = self.ranks.broadcast_int(self.total)
        self.bounds = self.recipe.epoch_bounds(self.total)

    # --- training ------------------------------------------------------------------------------------
    def _optimizer(self):
        """Weights trainable; in "learn" mode a scale parameter per quantizer (no weight decay)."""
        for p in self.sim.parameters():
            p.requires_grad_(True)
        scales = [q.learn_range() for q in self.sim.int_quantizers()] if self.recipe.mode == RangeMode.LEARNED else []
        groups = [{"params": [p for p in self.sim.parameters() if p.requires_grad and all(p is not s for s in scales)]}]
        if scales:
            groups.append({"params": scales, "weight_decay": 0.0})
        opt = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.recipe.weight_decay)
        total = self.total
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        return opt, sched

    def _freeze_due(self, step: int) -> None:
        """Observers and trained BN statistics freeze once their step count is reached."""
        if self.observing and step >= self.recipe.freeze_after:
            for q in self.sim.int_quantizers():
                q.stop_observing()
            self.observing = False
            self.notes.append(f"activation observers frozen after step {step}")
        if self.trained_bn and step >= self.recipe.bn_freeze_after:
            fold_trained_bn(self.sim, detach=True)
            self.trained_bn = 0
            self.notes.append(f"BN statistics trained for {step} steps, then folded and frozen")

    def _evaluation_round(self, epoch: int, step: int, started: float) -> None:
        """The lead rank scores the sim (on the CPU, like every evaluation); the other ranks wait for it."""
        if self.trained_bn:
            fold_trained_bn(self.sim, detach=False)
        self.sim.eval()
        if self.lead:
            self.sim.to("cpu")
            acc = accuracy(self.sim, self.inp.eval_batches, self.inp.labels, self.say, f"fake-quant (epoch {epoch})")
            self._epoch_row(epoch, step, acc, self._int8_round(f"epoch{epoch}"), round(time.perf_counter() - started, 1))
            self.sim.to(self.device)
        if self.ranks is not None:
            self.ranks.barrier()

    def _steps(self):
        """Index batches forever: a fresh permutation whenever the current one runs out."""
        size = min(self.recipe.batch_size, len(self.train))  # a training set smaller than a batch is one batch
        while True:
            perm = torch.randperm(len(self.train), generator=self.gen)
            for pos in range(0, len(perm) - size + 1, size):
                yield perm[pos: pos + size]

    def run(self) -> None:
        """Train `total` steps, logging the loss every `log_every` and evaluating at each epoch bound."""
        recipe = self.recipe
        self.trained_bn = attach_trained_bn(self.sim) if recipe.bn_freeze_after > 0 else 0
        self.sim.to(self.device)
        opt, sched = self._optimizer()
        model = self.ranks.wrap(self.sim) if self.ranks is not None else self.sim
        self.observing = recipe.mode == RangeMode.OBSERVED and recipe.freeze_after > 0
        if self.observing:
            for q in self.sim.int_quantizers():
                q.observe_ranges()
        started, running, epoch = time.perf_counter(), [], 0
        for step, idx in enumerate(self._steps(), start=1):
            x, y = self._batch(idx)
            self.sim.train()
            with MACHINE_LOCK:
                running.append(train_step(model, opt, x, y, recipe.label_smoothing))
            self.sim.weights_changed()
            current_lr = opt.param_groups[0]["lr"]
            sched.step()
            self._freeze_due(step)
            if step % recipe.log_every == 0 or step == self.total:
                row = QATStepRow(step, round(sum(running) / len(running), 5), current_lr)
                running = []
                self.steps_log.append(row)
                self.emit(row)
            self.say(0.08 + 0.8 * step / self.total, Msg("epoch {epoch}/{epochs}, step {step}/{steps}", epoch=epoch + 1,
                                                                epochs=len(self.bounds), step=step, steps=self.total))
            if step == self.bounds[epoch]:
                epoch += 1
                self._evaluation_round(epoch, step, started)
            if step >= self.total:
                break
        self.finetune_s = time.perf_counter() - started
        self.sim.to("cpu")

    def finalize(self) -> None:
        """Stop observing, fold trained BN for good, freeze the weights and write the trained grids back
        as each quantizer's range, so every backend exports them."""
        for q in self.sim.int_quantizers():
            q.stop_observing()
        if self.trained_bn:
            fold_trained_bn(self.sim, detach=True)
        self.sim.eval()
        for p in self.sim.parameters():
            p.requires_grad_(False)
        if self.recipe.mode != RangeMode.FIXED:
            for q in self.sim.int_quantizers():
                q.freeze_range(f"qat-{self.recipe.range_mode}")
        self.sim.weights_changed()
