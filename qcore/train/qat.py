"""Quantization-aware training: fine-tune a calibrated QuantSim with straight-through gradients.

The recipe follows the literature (Krishnamoorthi 2018; Nagel et al. 2021 white paper):
- start from the FP32 weights, calibrated exactly as PTQ would be (the user's config and method);
- AdamW at about 1% of the model's original training rate, annealed to zero on a cosine;
- a few short "epochs": the run's steps split into rounds, each followed by an evaluation of
  the fake-quant model and of the real INT8 model built from it (ONNX Runtime, U8S8) with its
  measured batch-1 latency.
BatchNorm is folded into the convolutions (the QuantSim does this, as deployed INT8 models do). By
default it stays folded, its statistics frozen from step 0; with `bn_freeze_after=K` the BNs come
back for the first K steps and train their statistics in front of the folded, quantized weight,
then fold again and freeze. Activation ranges are one of:
- "fixed": the calibrated ranges stay as they are;
- "observe": ranges follow the training batches (moving-average min/max, as torch.ao's QAT
  observers) for the first `freeze_after` steps, then freeze;
- "learn": each scale is a parameter trained with the LSQ gradient.

`run_qat` never touches streamlit: it reports through `progress(message, fraction)` (which may
raise to cancel; it is called at least every training step and every evaluation batch) and
streams metric rows through `on_metric(row)`. Every training step holds `MACHINE_LOCK` so a
latency measurement elsewhere in the process never overlaps it.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from qcore.runtime.backends import ort as ort_backend
from qcore.zoo.data import calibration_subset, eval_subset, load_dataset, subset
from qcore.runtime.deploy import calibrated_sim
from qcore.analysis.evaluate import DEFAULT_BATCH, batches
from qcore.analysis.experiments import check_compatible, default_data, run_identity
from qcore.quant.fold import bn_affine, folded, unfold_conv_bn
from qcore.runtime.machine import MACHINE_LOCK
from qcore.runtime.latency import measure_interleaved
from qcore.zoo.models import LoadedModel, load_model
from qcore.quant.qconfig import QuantConfig
from qcore.quant.qparams import compute_qparams
from qcore.quant.quantsim import QuantSim
from qcore.train.builtin import augment

__all__ = ["RANGE_MODES", "QATRecipe", "default_lr", "run_qat", "step_overhead"]

RANGE_MODES = ("fixed", "observe", "learn")
DEFAULT_LR = 1e-5  # when the model does not record its training rate: ~1% of Adam's usual 1e-3
EMA = 0.01  # torch.ao's moving-average observer constant


@dataclass(frozen=True)
class QATRecipe:
    """How to fine-tune. Give `steps`, or `minutes` (then the steps that fit are worked out from a
    measured step time and the measured cost of one evaluation round)."""

    steps: int | None = None
    minutes: float | None = 2.0
    epochs: int = 3  # evaluation rounds the steps are split into
    batch_size: int = 64
    lr: float | None = None  # None: lr_fraction of the model's original training rate
    lr_fraction: float = 0.01
    weight_decay: float = 0.0
    label_smoothing: float = 0.05  # the loss the built-ins were trained with
    range_mode: str = "fixed"
    freeze_after: int = 50  # "observe": steps during which ranges follow the training batches
    bn_freeze_after: int = 0  # steps during which BN statistics train (0: BN folded and frozen from the start)
    train_size: int | None = None  # None: the whole train split
    augment: bool = True
    int8_each_epoch: bool = True
    latency_iters: int = 20
    log_every: int = 5

    def __post_init__(self):
        if (self.steps is None) == (self.minutes is None):
            raise ValueError("give either steps or minutes for the QAT run")
        if self.steps is not None and self.steps < 1:
            raise ValueError("steps must be at least 1")
        if self.minutes is not None and not 0 < self.minutes <= 120:
            raise ValueError("minutes must be between 0 and 120")
        if not 1 <= self.epochs <= 50:
            raise ValueError("epochs must be between 1 and 50")
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if self.lr is not None and not 0 < self.lr < 1:
            raise ValueError("the learning rate must be between 0 and 1")
        if self.range_mode not in RANGE_MODES:
            raise ValueError(f"range_mode must be one of {', '.join(RANGE_MODES)}, not {self.range_mode!r}")
        if self.freeze_after < 0 or self.bn_freeze_after < 0:
            raise ValueError("freeze_after and bn_freeze_after must be 0 or more")


def default_lr(loaded: LoadedModel, fraction: float = 0.01) -> float:
    """`fraction` of the learning rate the model was trained with, when its checkpoint records it."""
    lr = loaded.info.get("lr")
    return float(lr) * fraction if isinstance(lr, (int, float)) and lr > 0 else DEFAULT_LR


# --- pieces --------------------------------------------------------------------------------------
def _int_quantizers(sim: QuantSim):
    return [q for q in sim.quantizers.values() if q.mode == "quant" and q.dtype == "int"]


def _prepare_trainable(sim: QuantSim, mode: str) -> list[torch.nn.Parameter]:
    """Make the sim's weights trainable; in "learn" mode add a scale parameter per quantizer."""
    for p in sim.parameters():
        p.requires_grad_(True)
    scales = []
    if mode == "learn":
        for q in _int_quantizers(sim):
            q.learned_scale = torch.nn.Parameter(q.scale.detach().clone().reshape(1))
            scales.append(q.learned_scale)
    return scales


class _RangeObservers:
    """Moving-average min/max of each quantized activation over the training batches, pushed into
    the quantizer's scale and zero-point before it quantizes; `remove()` freezes them."""

    def __init__(self, sim: QuantSim):
        self.running = {}
        self.handles = []
        for q in _int_quantizers(sim):
            self.running[q.name] = torch.tensor([q.range.clip_min, q.range.clip_max])
            self.handles.append(q.register_forward_pre_hook(self._hook))

    def _hook(self, q, args):
        if not q.training:
            return
        lo, hi = torch.aminmax(args[0].detach())
        r = self.running[q.name]
        r.mul_(1 - EMA).add_(torch.stack([lo, hi]), alpha=EMA)
        scale, zp = compute_qparams(r[0].reshape(1), r[1].reshape(1), q.scheme)
        q.scale, q.zero_point = scale.reshape(()), zp.reshape(())

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


class _TrainedBN(torch.nn.Module):
    """A folded BN brought back so that its statistics train during QAT (Jacob et al. 2018, as
    torch.ao's ConvBn QAT modules do): the conv's own weight, scaled by gamma / running std, is
    fake-quantized exactly as the folded deployed weight will be; the scale is undone and the BN runs
    in train mode on the result (batch statistics; running statistics updated). `fold()` writes the
    folded weight and bias into the conv, which then runs as before."""

    def __init__(self, wl, bn: torch.nn.BatchNorm2d):
        super().__init__()
        w, b = unfold_conv_bn(wl.layer.weight, wl.layer.bias, bn)
        self.weight, self.bias = torch.nn.Parameter(w.clone()), torch.nn.Parameter(b.clone())
        self.bn = copy.deepcopy(bn).train()
        for p in self.bn.parameters():
            p.requires_grad_(True)

    def forward(self, wl, x):
        f = bn_affine(self.bn)[0]
        w = self.weight * f.reshape(-1, 1, 1, 1)
        y = wl.layer._conv_forward(x, wl.quantize(w) if wl.enabled else w, None)
        return self.bn(y / f.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1))

    @torch.no_grad()
    def fold(self, conv: torch.nn.Conv2d) -> None:
        """In place (the optimizer holds these very parameters once the BN is gone)."""
        weight, bias = folded(self.weight, self.bias, self.bn)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)


def _attach_trained_bn(sim: QuantSim) -> int:
    for name, bn in sim.bn_of.items():
        wl = sim.weight_layers[name]
        wl.bn_train = _TrainedBN(wl, bn)
    return len(sim.bn_of)


def _fold_trained_bn(sim: QuantSim, detach: bool) -> None:
    """Fold the trained BNs into their convs (for an evaluation, or for good when `detach`)."""
    for wl in sim.weight_layers.values():
        if wl.bn_train is not None:
            wl.bn_train.fold(wl.layer)
            if detach:
                wl.bn_train = None
    sim.weights_changed()


def _finalize_ranges(sim: QuantSim, mode: str) -> None:
    """Write the trained grid back as each quantizer's range, so every backend exports it."""
    if mode == "fixed":
        return
    _sync_learned(sim)
    for q in _int_quantizers(sim):
        q.learned_scale = None
        q.set_qparams(float(q.scale), int(q.zero_point), f"qat-{mode}")


def _sync_learned(sim: QuantSim) -> None:
    """Copy learned scales into the buffers the exporters read (training goes on afterwards)."""
    for q in _int_quantizers(sim):
        if q.learned_scale is not None:
            q.scale = q.learned_scale.detach().abs().clamp_min(1e-12).reshape(())


@torch.no_grad()
def _accuracy(model, xs: list[torch.Tensor], labels: torch.Tensor, say: Callable[[str], None], what: str) -> float:
    correct, done = 0, 0
    for x in xs:
        correct += int((model(x).argmax(1) == labels[done: done + len(x)]).sum())
        done += len(x)
        say(f"evaluating {what}: {done}/{len(labels)} images")
    return correct / len(labels)


def _train_step(model, opt, x, y, label_smoothing: float = 0.0) -> float:
    loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def step_overhead(fp32_model: torch.nn.Module, sim: QuantSim, x: torch.Tensor, y: torch.Tensor,
                  repeats: int = 10, warmup: int = 3) -> dict:
    """Median time of one training step, plain FP32 vs fake-quant, interleaved on copies of both.

    The FP32 step trains the original (unfolded BN, train mode) model; the QAT step trains the sim.
    """
    fp32 = copy.deepcopy(fp32_model).train()
    qsim = copy.deepcopy(sim).train()
    for m in (fp32, qsim):
        for p in m.parameters():
            p.requires_grad_(True)
    opts = {"fp32": torch.optim.AdamW(fp32.parameters(), lr=1e-6), "qat": torch.optim.AdamW(qsim.parameters(), lr=1e-6)}
    models = {"fp32": fp32, "qat": qsim}
    times: dict[str, list[float]] = {"fp32": [], "qat": []}
    with MACHINE_LOCK:
        for i in range(warmup + repeats):
            for name in (("fp32", "qat") if i % 2 == 0 else ("qat", "fp32")):
                start = time.perf_counter()
                _train_step(models[name], opts[name], x, y)
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"fp32_step_s": round(med["fp32"], 4), "qat_step_s": round(med["qat"], 4),
            "ratio": round(med["qat"] / med["fp32"], 3), "batch": len(x)}


class _Int8Probe:
    """Builds the real INT8 model (ONNX Runtime U8S8) from the sim, scores it and times it against
    ONNX Runtime FP32, interleaved."""

    def __init__(self, loaded: LoadedModel, out_dir: Path, threads: int, iters: int):
        self.shape = loaded.spec.input_shape
        self.out_dir, self.threads, self.iters = out_dir, threads, iters
        self.fp32 = ort_backend.fp32_runner(loaded.module, self.shape, out_dir, threads)
        self.note: str | None = None

    def build(self, sim: QuantSim, tag: str):
        _sync_learned(sim)
        sim.eval()
        try:
            runner = ort_backend.int8_runner(sim, self.shape, self.out_dir / tag, self.threads, "u8")
        except ValueError as exc:  # e.g. 4-bit activations: no INT8 kernel runs them
            self.note = f"no real INT8 model for this config: {exc}"
            return None
        return runner

    def measure(self, runners: dict, x: torch.Tensor, say: Callable[[str], None]) -> dict[str, float]:
        with MACHINE_LOCK:
            timed = measure_interleaved({"fp32_ort": self.fp32.run, **{k: r.run for k, r in runners.items()}},
                                        x, self.threads, warmup=3, iters=self.iters,
                                        progress=lambda f: say(f"timing INT8 vs FP32: {round(f * self.iters)}/{self.iters}"))
        return {k: v.median_ms for k, v in timed.items()}


# --- the run ---------------------------------------------------------------------------------------
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
    progress: Callable[..., None] | None = None,
    on_metric: Callable[[dict], None] | None = None,
) -> dict:
    """Fine-tune with fake quantization; returns the report (and keeps the model under "sim").

    Curves are measured on `eval_size` test images after every epoch; the final FP32 / PTQ / QAT /
    INT8 accuracies on `final_eval_size` test images (None: the whole test split).
    """
    say = progress or (lambda msg, fraction=None: None)
    emit = on_metric or (lambda row: None)
    recipe = recipe or QATRecipe()
    config = config or QuantConfig()
    threads = threads or torch.get_num_threads()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    say("loading model and data", 0.0)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    data_name = data or default_data(loaded)
    pre = loaded.spec.preprocess
    train = subset(load_dataset(data_name, "train"), recipe.train_size, seed)
    monitor = eval_subset(data_name, eval_size, seed)
    check_compatible(loaded, monitor)
    if len(train) == 0:
        raise ValueError("the training set is empty")
    xs = list(batches(monitor.images, pre, DEFAULT_BATCH))
    lr = recipe.lr or default_lr(loaded, recipe.lr_fraction)

    say("calibrating (one statistics pass)", 0.01)
    sim = calibrated_sim(loaded, config, list(batches(calibration_subset(data_name, calib_size, seed).images, pre)))
    ptq_sim = copy.deepcopy(sim)
    probe = _Int8Probe(loaded, out_dir, threads, recipe.latency_iters)
    x1 = xs[0][:1]

    built: dict = {}  # the INT8 models of PTQ and of the latest epoch, reused by the final report

    def int8_round(tag: str) -> dict:
        """The real INT8 model built from the sim as it is now: accuracy and batch-1 latency."""
        runner = probe.build(sim, tag) if recipe.int8_each_epoch else None
        if runner is None:
            return {}
        built["ptq" if tag == "ptq" else "latest"] = runner
        acc = _accuracy(runner, xs, monitor.labels, lambda m: say(m), f"INT8 ({tag})")
        ms = probe.measure({"int8": runner}, x1, lambda m: say(m))
        return {"int8_accuracy": acc, "int8_latency_ms": ms["int8"], "fp32_ort_latency_ms": ms["fp32_ort"]}

    fp32_acc = _accuracy(loaded.module, xs, monitor.labels, lambda m: say(m, 0.02), "FP32")
    round_start = time.perf_counter()
    ptq_acc = _accuracy(sim, xs, monitor.labels, lambda m: say(m, 0.03), "PTQ fake-quant")
    int8_row = int8_round("ptq")
    round_s = time.perf_counter() - round_start
    row0 = {"kind": "epoch", "epoch": 0, "step": 0, "fake_quant_accuracy": ptq_acc, "fp32_accuracy": fp32_acc,
            "ptq_accuracy": ptq_acc, **int8_row, "seconds": 0.0}
    emit(row0)

    def batch(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = train.images[idx]
        return pre(augment(raw, gen) if recipe.augment else raw), train.labels[idx]

    say("measuring a training step: FP32 vs fake-quant, interleaved", 0.05)
    probe_x, probe_y = batch(torch.randint(0, len(train), (recipe.batch_size,), generator=gen))
    overhead = step_overhead(loaded.module, sim, probe_x, probe_y)

    if recipe.steps is not None:
        total = recipe.steps
    else:  # what fits: the budget less one evaluation round per epoch, at the measured step time
        train_budget = recipe.minutes * 60 - recipe.epochs * round_s
        total = max(recipe.epochs, int(train_budget / overhead["qat_step_s"]))
    bounds = sorted({max(1, round(total * (e + 1) / recipe.epochs)) for e in range(recipe.epochs)})

    trained_bn = _attach_trained_bn(sim) if recipe.bn_freeze_after > 0 else 0
    scales = _prepare_trainable(sim, recipe.range_mode)
    groups = [{"params": [p for p in sim.parameters() if p.requires_grad and all(p is not s for s in scales)]}]
    if scales:
        groups.append({"params": scales, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    observers = _RangeObservers(sim) if recipe.range_mode == "observe" and recipe.freeze_after > 0 else None

    history, steps_log = [row0], []
    notes = [sim.unsupported_note()] if sim.unsupported_note() else []
    train_start = time.perf_counter()
    perm, pos, running = torch.randperm(len(train), generator=gen), 0, []
    size = min(recipe.batch_size, len(train))  # a training set smaller than a batch is one batch
    step, epoch = 0, 0
    while step < total:
        if pos + size > len(perm):
            perm, pos = torch.randperm(len(train), generator=gen), 0
        x, y = batch(perm[pos: pos + size])
        pos += size
        sim.train()
        with MACHINE_LOCK:
            running.append(_train_step(sim, opt, x, y, recipe.label_smoothing))
        sim.weights_changed()
        current_lr = opt.param_groups[0]["lr"]
        sched.step()
        step += 1
        if observers is not None and step >= recipe.freeze_after:
            observers.remove()
            observers = None
            notes.append(f"activation observers frozen after step {step}")
        if trained_bn and step >= recipe.bn_freeze_after:
            _fold_trained_bn(sim, detach=True)
            trained_bn = 0
            notes.append(f"BN statistics trained for {step} steps, then folded and frozen")
        if step % recipe.log_every == 0 or step == total:
            row = {"kind": "step", "step": step, "loss": round(sum(running) / len(running), 5), "lr": current_lr}
            running = []
            steps_log.append(row)
            emit(row)
        say(f"epoch {epoch + 1}/{len(bounds)}, step {step}/{total}", 0.08 + 0.8 * step / total)
        if step == bounds[epoch]:
            epoch += 1
            if trained_bn:
                _fold_trained_bn(sim, detach=False)
            sim.eval()
            acc = _accuracy(sim, xs, monitor.labels, lambda m: say(m), f"fake-quant (epoch {epoch})")
            int8_row = int8_round(f"epoch{epoch}")
            row = {"kind": "epoch", "epoch": epoch, "step": step, "fake_quant_accuracy": acc, "fp32_accuracy": fp32_acc,
                   "ptq_accuracy": ptq_acc, **int8_row, "seconds": round(time.perf_counter() - train_start, 1)}
            history.append(row)
            emit(row)
    if observers is not None:
        observers.remove()
    if trained_bn:
        _fold_trained_bn(sim, detach=True)
    finetune_s = time.perf_counter() - train_start
    sim.eval()
    for p in sim.parameters():
        p.requires_grad_(False)
    _finalize_ranges(sim, recipe.range_mode)
    sim.weights_changed()

    monitor_set = (xs, monitor.labels)
    if final_eval_size == eval_size:
        final_set = monitor_set
    else:
        evald = eval_subset(data_name, final_eval_size, seed)
        final_set = (list(batches(evald.images, pre, DEFAULT_BATCH)), evald.labels)
    final = _final_report(loaded, sim, ptq_sim, probe, final_set, monitor_set, history, built, say)
    if probe.note:
        notes.append(probe.note)
    files = []
    if final.get("qat_onnx"):
        shutil.copyfile(final.pop("qat_onnx"), out_dir / "qat_int8.onnx")
        files.append("qat_int8.onnx")
    (out_dir / "qat_config.json").write_text(config.to_json() + "\n")
    files.append("qat_config.json")
    report = {
        **run_identity(loaded, data_name, seed, calib_size),
        "config": config.to_dict(),
        "recipe": {**asdict(recipe), "lr": lr, "steps": total},
        **final,
        "seconds": round(finetune_s, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "step_overhead_vs_fp32": overhead["ratio"],
        "step_times": overhead,
        "steps": total,
        "monitor_images": len(monitor),
        "history": history,
        "losses": steps_log,
        "threads": threads,
        "notes": notes,
        "files": files,
        "out_dir": str(out_dir),
    }
    say("done", 1.0)
    return {**report, "sim": sim}


def _final_report(loaded, sim, ptq_sim, probe: _Int8Probe, final_set, monitor_set, history, built, say) -> dict:
    """FP32 / PTQ / QAT (fake-quant and real INT8) on the final evaluation set, with measured
    batch-1 latency of PTQ and QAT INT8 against ONNX Runtime FP32 and sizes on disk.

    `final_set` and `monitor_set` are (batches, labels); when they are the same set, the last
    epoch's numbers are the final ones and nothing is evaluated twice. INT8 models already `built`
    (PTQ at epoch 0; the last epoch's, whose sim is the final one) are reused, not exported again."""
    say("final evaluation", 0.9)
    same_set = final_set is monitor_set
    xs, labels = final_set
    first, last = history[0], history[-1]
    qat_runner = built.get("latest") or probe.build(sim, "final")
    ptq_runner = (built.get("ptq") or probe.build(ptq_sim, "ptq")) if qat_runner is not None else None

    def acc(model, what, known):
        """The number already measured on this set, or a fresh evaluation."""
        if same_set and known is not None:
            return known
        return _accuracy(model, xs, labels, lambda m: say(m, 0.92), what)

    out = {
        "fp32_accuracy": acc(loaded.module, "FP32 (final)", first["fp32_accuracy"]),
        "ptq_accuracy": acc(ptq_sim, "PTQ fake-quant (final)", first["fake_quant_accuracy"]),
        "qat_accuracy": acc(sim, "QAT fake-quant (final)", last["fake_quant_accuracy"]),
        "int8_accuracy": None, "ptq_int8_accuracy": None, "eval_images": len(labels),
        "latency_ms": {}, "size_bytes": {"fp32_onnx": probe.fp32.size_bytes},
    }
    if qat_runner is not None:
        out["int8_accuracy"] = acc(qat_runner, "QAT INT8 (final)", last.get("int8_accuracy"))
        out["ptq_int8_accuracy"] = acc(ptq_runner, "PTQ INT8 (final)", first.get("int8_accuracy"))
        out["latency_ms"] = probe.measure({"ptq_int8": ptq_runner, "qat_int8": qat_runner}, xs[0][:1], lambda m: say(m, 0.97))
        out["size_bytes"].update(ptq_int8_onnx=ptq_runner.size_bytes, qat_int8_onnx=qat_runner.size_bytes)
        out["qat_onnx"] = str(qat_runner.path)
    return out
