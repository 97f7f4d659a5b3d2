"""Small real models for tests that need a whole pipeline but not a trained network."""

import torch
from torch import nn

from qcore.analysis.reports import CalibrationStudy, StudyRow
from qcore.quant.inventory import LayerInventory
from qcore.runtime.reports import DeployReport, PathScore
from qcore.zoo.models import LoadedModel, ModelSpec, finish_loading, get_spec
from qcore.zoo.report import RunIdentity


def tiny_fashion_model() -> LoadedModel:
    """A 4-channel conv net on Fashion-MNIST inputs, registered like a user model."""
    base = get_spec("fm_resnet")
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 10))
    spec = ModelSpec("tiny", "user", "tiny conv net", (1, 28, 28), base.preprocess, base.class_names,
                     "fashion-mnist", "test", lambda: net)
    return finish_loading(spec, net)


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BN layers non-trivial statistics so folding has something to do."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


# Reports as the engine makes them, for history tests (stored, listed, compared).
DEPLOY = DeployReport(
    identity=RunIdentity("fm_resnet", "abc123", "fashion-mnist", seed=0, calib_size=512, isa={}, scored_by="labels"),
    inventory=LayerInventory(("stem.0", "fc"), ()), random_weights=False,
    backend="ort_u8s8", config={"default": {"weight_bits": 8}}, int8_scheme="weights use the full 8 bits", fp32_accuracy=0.93, simulation_accuracy=0.93,
    int8_accuracy=0.929, agreement_with_simulation=0.999, logit_sqnr_db_vs_simulation=30.0, eval_images=1000,
    paths={"ort_u8s8": PathScore("int8", 1000, 0.999, 0.99, 30.0, 0.929)},
    latency_ms={"batch_1": {"ort_fp32": {"median_ms": 1.2, "p10_ms": 1.1, "p90_ms": 1.3, "runs": 30},
                            "ort_u8s8": {"median_ms": 0.75, "p10_ms": 0.7, "p90_ms": 0.8, "runs": 30}}},
    fastest_fp32="ort_fp32", speedup_vs_fastest_fp32=1.6, speedup_by_path={"ort_u8s8": 1.6},
    speedup_vs_fastest_fp32_by_batch={"1": 1.6}, best_int8="ort_u8s8", int8_paths={}, size_bytes={}, macs=80_000_000,
    threads=2, iters=30, machine={}, notes=[], seconds=12.5)
STUDY = CalibrationStudy(
    identity=RunIdentity("fm_gelunet", "def456", "fashion-mnist", seed=1, calib_size=512, isa={}, scored_by="labels"),
    inventory=LayerInventory(("stem.0", "fc"), ()), eval_size=2000,
    fp32_accuracy=0.93, methods=["max", "mse"], act_bits=[8, 4], weight_bits=8, granularity="channel", symmetric=False,
    weight_range="full",
    accuracy=[StudyRow("max", 8, 0.92, 0.98), StudyRow("mse", 4, 0.85, 0.9)], ranges={}, layer_sqnr_db={}, points=[],
    weights={"x": {"min": [1] * 5}}, stats_pass_seconds=0.9, unsupported_layers=[])


def image_folder(root, n_per_class: int = 8, synsets: bool = True, classes: int = 4, labeled: bool = True):
    """JPEGs of mixed sizes (256x256, 320x240, 500x375, 240x300): an ImageNet-style folder with synset
    sub-folders, plain class names, or (labeled=False) plain images at the top. Each class has its own
    colour and stripe frequency, each image its own phase and noise, so images differ as photos do."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from qcore.zoo.data import imagenet_wnids

    root, wnids = Path(root), imagenet_wnids()
    rng = np.random.default_rng(0)
    sizes = [(256, 256), (320, 240), (500, 375), (240, 300)]
    for c in range(classes):
        folder = root / (wnids[c * 100] if synsets else f"class_{c}") if labeled else root
        folder.mkdir(parents=True, exist_ok=True)
        colour = rng.uniform(40, 215, size=3)
        for i in range(n_per_class):
            w, h = sizes[(c + i) % len(sizes)]
            yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
            angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
            stripes = np.sin(2 * np.pi * (3 + 4 * c) * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
            img = colour + 60 * stripes[..., None] * rng.uniform(0.5, 1.0, size=3) + rng.normal(0, 12, size=(h, w, 3))
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"c{c}_{i}.jpg", quality=90)
    return root


@torch.no_grad()
def data_initialized(model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """A random-weight model whose predictions vary from image to image, as a trained one's do: BN
    statistics re-estimated on `x` (a deep random net otherwise collapses to one class), then BN
    scales and shifts randomized so that folding and per-channel ranges have something to do."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    model(x)
    for m in bns:
        m.momentum = 0.1
        m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.bias.copy_((torch.rand(m.num_features, generator=g) - 0.5) * 0.2)
    model.eval()
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    seen = []
    handle = head.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    model(x)
    handle.remove()
    feats = seen[0]  # the classifier sees what varies between images, not what they share
    head.weight.div_(feats.std(0).mean() + 1e-6)
    head.bias.copy_(-head.weight @ feats.mean(0))
    return model


def train_briefly(model: nn.Module, steps: int = 150, batch: int = 128, seed: int = 0) -> nn.Module:
    """A few hundred SGD steps on Fashion-MNIST: enough for a model with real margins between classes
    (a random deep net is chaotic, so 'INT8 agrees with the simulation' would mean nothing on it)."""
    from qcore.zoo.data import load_fashion_mnist
    from qcore.zoo.models import FM_PREPROCESS

    data = load_fashion_mnist("train")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(data), (batch,), generator=g)
        loss = nn.functional.cross_entropy(model(FM_PREPROCESS(data.images[idx])), data.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def with_dead_channels(model: nn.Module, fraction: float = 0.1, seed: int = 0) -> nn.Module:
    """Some BN channels dead as trained nets have them: gamma ~0 with a real beta (|beta| 2 to 8), so
    after folding their per-channel weight scale is tiny next to a real bias."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            dead = torch.rand(m.num_features, generator=g) < fraction
            m.weight[dead] = 1e-7
            sign = torch.where(torch.rand(m.num_features, generator=g) < 0.5, -1.0, 1.0)
            m.bias[dead] = (sign * (2 + 6 * torch.rand(m.num_features, generator=g)))[dead]
    return model
