"""Train a built-in model on Fashion-MNIST and write its checkpoint to assets/.

`python -m qcore train NAME` reproduces the shipped checkpoint: fixed seed, AdamW with a
one-cycle (cosine) schedule, random flips and 2-pixel shifts done on whole batches in memory,
so an epoch costs only the model's own compute. Next to NAME.pt it writes NAME.json with the
recipe, the test accuracy and the seconds spent.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from qcore.analysis.evaluate import top1
from qcore.zoo.data import load_fashion_mnist
from qcore.zoo.models import ASSETS, BUILTIN

__all__ = ["augment", "train_builtin"]


def augment(x: torch.Tensor, gen: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random horizontal flips and translations of up to `shift` pixels, per raw image.

    Works on raw uint8 pixels so the uncovered border is black (0), like the images' background.
    """
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    padded = F.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    rows = (dy.view(-1, 1) + torch.arange(h)).view(n, 1, h, 1)
    cols = (dx.view(-1, 1) + torch.arange(w)).view(n, 1, 1, w)
    idx_n = torch.arange(n).view(n, 1, 1, 1)
    return padded[idx_n, torch.arange(x.shape[1]).view(1, -1, 1, 1), rows, cols]


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    """Test accuracy of the model being trained (switched to eval mode), on preprocessed images."""
    model.eval()
    return top1(model, x.split(batch), y)


def _save(model: torch.nn.Module, record: dict, out_dir: Path, name: str) -> None:
    """NAME.pt (the state_dict) and NAME.json (the recipe and the measured accuracy)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    torch.save(model.state_dict(), out_dir / f"{name}.pt")
    (out_dir / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")


def train_builtin(
    name: str,
    epochs: int | None = None,
    out_dir: Path = ASSETS,
    seed: int = 0,
    batch: int = 128,
    lr: float = 3e-3,
    max_steps: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train built-in model `name` from scratch and save NAME.pt / NAME.json; returns the record."""
    spec = BUILTIN[name]
    epochs = epochs or spec.train_epochs
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    x_train, y_train = train.images, train.labels
    x_test, y_test = spec.preprocess(test.images), test.labels
    model = spec.build()
    steps_per_epoch = (len(x_train) + batch - 1) // batch
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    start, step = time.perf_counter(), 0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        running = 0.0
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[i * batch: (i + 1) * batch]
            inputs = spec.preprocess(augment(x_train[idx], gen))
            loss = F.cross_entropy(model(inputs), y_train[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            running += loss.item()
            if step % 100 == 0:
                log(f"{name} epoch {epoch + 1}/{epochs} step {step}/{total} loss {running / (i + 1):.4f} "
                    f"({time.perf_counter() - start:.0f} s)")
        acc = accuracy(model, x_test, y_test)
        log(f"{name} epoch {epoch + 1}: test accuracy {acc:.4f} ({time.perf_counter() - start:.0f} s)")
    record = {
        "model": name, "test_accuracy": acc, "epochs": epochs, "steps": step, "seed": seed, "batch": batch, "lr": lr,
        "optimizer": "AdamW wd=5e-4, OneCycle, label smoothing 0.05, flips + 2px shifts",
        "train_seconds": round(time.perf_counter() - start, 1), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "command": f"python -m qcore train {name} --epochs {epochs} --seed {seed}",
    }
    _save(model, record, Path(out_dir), name)
    return record
