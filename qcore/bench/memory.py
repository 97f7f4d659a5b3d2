"""`python -m qcore bench memory`: peak resident memory of each command on a 224x224 model, by image count.

Each (command, images) pair runs as its own `python -m qcore ...` process, as a user runs it, on a torchvision
ImageNet architecture with random weights (saved to a file and passed with `--weights`: the memory and the
time of a pass do not depend on the values) and a folder of N 256x256 RGB images (Fashion-MNIST pictures
scaled up; an image folder without classes is scored by agreement with FP32). Calibration and evaluation use
the same N images. The peak resident set size comes from the kernel's accounting of that one child process
(`os.wait4`), so nothing of this process is counted. The slope, MB per 1000 more images, is a least-squares fit
over the image counts: with batches made on demand it should be the uint8 images alone (196 MB per 1000 at
256x256x3), whatever the command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qcore.runtime.machine import cpu_features

__all__ = ["COMMANDS", "bench_memory", "calibrated_random_weights", "image_folder"]

# name -> the command line after `python -m qcore`, with {out} for its output path
COMMANDS = {
    "calibrate": ["calibrate", "--methods", "max,percentile:99.99,entropy,mse"],
    # 4 layers, each against all the others: an item's memory is one batch's graph values whatever the layers swept
    # (QX_PREFIX_BUDGET_MB), and all 53 of mobilenet_v2 at 1024 images would take hours on 2 cores
    "sensitivity": ["sensitivity", "--max-layers", "4", "--out", "{out}.json"],
    "recover:cle+bias_correction": ["recover", "--steps", "cle,bias_correction", "--out", "{out}.json"],
    "recover:adaround": ["recover", "--steps", "adaround:iters=50", "--out", "{out}.json"],
    "recover:gptq": ["recover", "--steps", "gptq", "--out", "{out}.json"],
    "recover:brecq": ["recover", "--steps", "brecq:iters=50", "--out", "{out}.json"],
    "deploy": ["deploy", "--iters", "5", "--out", "{out}"],
}


def image_folder(root: Path, n: int, size: int = 256) -> Path:
    """`n` RGB PNG files of `size` x `size` in `root` (made once; reused when there already)."""
    from PIL import Image

    from qcore.zoo.data import load_fashion_mnist

    root.mkdir(parents=True, exist_ok=True)
    have = len(list(root.glob("*.png")))
    if have >= n:
        return root
    images = load_fashion_mnist("test", download=False).images
    for i in range(have, n):
        gray = images[i % len(images), 0].numpy()
        rgb = np.stack([gray, gray[::-1], gray.T], axis=-1)  # three different channels
        Image.fromarray(rgb).resize((size, size), Image.BILINEAR).save(root / f"img{i:05d}.png")
    return root


@torch.no_grad()
def calibrated_random_weights(model: str, path: Path) -> Path:
    """Random weights whose BatchNorm statistics are those of the model's own activations (on random inputs),
    so activations keep a sane range through the depth, as a trained network's do."""
    from qcore.zoo.models import get_spec

    if not path.exists():
        torch.manual_seed(0)
        net = get_spec(model).build()
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the batches below
        net.train()
        for _ in range(4):
            net(torch.randn(8, 3, 224, 224))
        torch.save(net.state_dict(), path)
    return path


def _run(argv: list[str], log: Path) -> tuple[float, float, int]:
    """(peak RSS in MB, seconds, exit code) of `python -m qcore *argv` as a child process of its own."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "qcore", *argv], stdout=out, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parents[2])
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - start, proc.returncode


def _slope(points: list[tuple[int, float]]) -> float | None:
    """MB per 1000 images, least squares; None with fewer than two image counts."""
    if len({n for n, _ in points}) < 2:
        return None
    n, mb = np.array(points, dtype=float).T
    return round(float(np.polyfit(n, mb, 1)[0] * 1000), 1)


def bench_memory(model: str = "mobilenet_v2", images: tuple[int, ...] = (64, 256, 1024),
                 commands: tuple[str, ...] = tuple(COMMANDS), work: Path | None = None, say=print) -> dict:
    work = Path(work or tempfile.mkdtemp(prefix="qx-bench-memory-"))
    folder = image_folder(work / "images", max(images))
    weights = calibrated_random_weights(model, work / f"{model}-random.pt")
    runs = []
    for name in commands:
        for n in images:
            sub = image_folder(work / f"images-{n}", n) if n < max(images) else folder
            out = work / f"{name.replace(':', '-').replace('+', '-')}-{n}"
            argv = [a.format(out=out) for a in COMMANDS[name]] + [
                "--model", model, "--weights", str(weights), "--data", f"imagefolder:{sub}",
                "--calib-size", str(n), "--eval-size", str(n)]
            mb, seconds, code = _run(argv, out.with_suffix(".log"))
            runs.append({"command": name, "model": model, "images": n, "peak_rss_mb": round(mb, 1),
                         "seconds": round(seconds, 1), "exit_code": code})
            say(f"{name} on {n} images: peak {mb:.0f} MB, {seconds:.0f} s, exit {code}")
    slopes = {c: _slope([(r["images"], r["peak_rss_mb"]) for r in runs if r["command"] == c and r["exit_code"] == 0])
              for c in commands}
    return {"bench": "memory", "model": model, "input": "3x224x224 (images decoded at 256x256)", "runs": runs,
            "slope_mb_per_1000_images": slopes, "uint8_images_mb_per_1000": round(1000 * 256 * 256 * 3 / 2**20, 1),
            "machine": cpu_features(), "work_dir": str(work)}
