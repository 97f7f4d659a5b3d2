"""Model registry: built-in Fashion-MNIST nets and torchvision ImageNet classifiers (uploads: user_models).

Every model, whatever its source, is described by one `ModelSpec` (name, input shape,
preprocessing, class names, weight source) and loaded into a `LoadedModel` that adds the module
and its parameter and MAC counts. Loaded modules are shared (the app caches them across
sessions), so they are returned in eval mode with gradients off and must never be mutated:
experiments work on `copy.deepcopy(loaded.module)`.

Weights never come from a pickle that can run code: every checkpoint goes through
`torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from qcore.zoo import builtin_nets
from qcore.zoo.data import FASHION_MNIST_CLASSES
from qcore.zoo.preprocess import Preprocess, preset

__all__ = [
    "model_identity",
    "ModelUnavailable",
    "Preprocess",
    "ModelSpec",
    "LoadedModel",
    "BUILTIN",
    "TORCHVISION",
    "DEFAULT_MODEL",
    "ASSETS",
    "list_models",
    "get_spec",
    "load_model",
    "count_macs",
    "unwrap_state_dict",
    "load_state_dict_into",
    "safe_torch_load",
    "imagenet_class_names",
    "finish_loading",
    "layer_table",
]

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEFAULT_MODEL = "fm_resnet"
MAX_UPLOAD_MB = float(os.environ.get("QX_MAX_UPLOAD_MB", "512"))


class ModelUnavailable(RuntimeError):
    """The model's weights or file cannot be had; the message tells the user what to do."""


FM_PREPROCESS = Preprocess(mean=(0.2860,), std=(0.3530,), channels=1, name="fashion-mnist")
IMAGENET_PREPROCESS = preset("imagenet", (3, 224, 224))


@dataclass(frozen=True)
class ModelSpec:
    """A uniform description of a model, whatever its source."""

    name: str
    family: str  # "builtin", "torchvision" or "user"
    description: str
    input_shape: tuple[int, int, int]
    preprocess: Preprocess
    class_names: tuple[str, ...]
    dataset: str  # what its classes are: "fashion-mnist", "imagenet", or the user's data
    weight_source: str
    build: Callable[[], nn.Module] = field(compare=False, repr=False)
    train_epochs: int = 0  # built-ins: the epochs `python -m qcore train NAME` runs


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to evaluate. Shared and read-only: deep-copy `module` before changing it."""

    spec: ModelSpec
    module: nn.Module
    params: int
    macs: int
    info: dict = field(default_factory=dict)  # e.g. the checkpoint's recorded test accuracy

    @property
    def name(self) -> str:
        return self.spec.name


def model_identity(loaded: "LoadedModel") -> tuple:
    """What makes two loaded models the same for cached and shared results: the weights (uploads may share a
    file name, never a hash), and how images reach them (the same file with other preprocessing is another model)."""
    spec = loaded.spec
    return loaded.info.get("sha256", loaded.name), spec.preprocess, spec.input_shape, loaded.info.get("arch")


BUILTIN: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "fm_resnet", "builtin",
            "ResNet-style CNN (BN + ReLU, residual adds), 3 stages x 2 basic blocks",
            (1, 28, 28), FM_PREPROCESS, FASHION_MNIST_CLASSES, "fashion-mnist",
            "assets/fm_resnet.pt", lambda: builtin_nets.FMResNet((32, 64, 128), (2, 2, 2)), 6,
        ),
        ModelSpec(
            "fm_mobilenetv2", "builtin",
            "MobileNetV2-style net (depthwise separable convs, ReLU6, inverted residuals)",
            (1, 28, 28), FM_PREPROCESS, FASHION_MNIST_CLASSES, "fashion-mnist",
            "assets/fm_mobilenetv2.pt", builtin_nets.FMMobileNetV2, 6,
        ),
        ModelSpec(
            "fm_gelunet", "builtin",
            "ResNet-style CNN with GELU activations (negative tail, outliers)",
            (1, 28, 28), FM_PREPROCESS, FASHION_MNIST_CLASSES, "fashion-mnist",
            "assets/fm_gelunet.pt", builtin_nets.FMGeluNet, 8,
        ),
        ModelSpec(
            "fm_vit", "builtin",
            "Vision Transformer (4x4 patches, 4 pre-LN blocks, multi-head attention, GELU MLP)",
            (1, 28, 28), FM_PREPROCESS, FASHION_MNIST_CLASSES, "fashion-mnist",
            "assets/fm_vit.pt", builtin_nets.FMViT, 20,
        ),
    )
}

# torchvision ImageNet classifiers offered in the registry, with their weights enum member.
TORCHVISION: dict[str, str] = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "mobilenet_v2": "MobileNet_V2_Weights.IMAGENET1K_V1",
    "mobilenet_v3_large": "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
    "efficientnet_b0": "EfficientNet_B0_Weights.IMAGENET1K_V1",
    "shufflenet_v2_x1_0": "ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1",
    "regnet_x_400mf": "RegNet_X_400MF_Weights.IMAGENET1K_V1",
}


def _tv_weights(name: str):
    import torchvision.models as tvm

    enum_name, member = TORCHVISION[name].split(".")
    return getattr(getattr(tvm, enum_name), member)


def _tv_spec(name: str) -> ModelSpec:
    import torchvision.models as tvm

    weights = _tv_weights(name)
    return ModelSpec(
        name, "torchvision", f"torchvision {name}, ImageNet-1k ({TORCHVISION[name]})",
        (3, 224, 224), IMAGENET_PREPROCESS, tuple(weights.meta["categories"]), "imagenet",
        weights.url, lambda: tvm.get_model(name, weights=None),
    )


def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in index order (from torchvision's weight metadata; no download)."""
    return tuple(_tv_weights("resnet18").meta["categories"])


def list_models() -> list[ModelSpec]:
    """Every registered model: built-ins first (the default first of all), then torchvision."""
    return list(BUILTIN.values()) + [_tv_spec(n) for n in TORCHVISION]


def get_spec(name: str) -> ModelSpec:
    if name in BUILTIN:
        return BUILTIN[name]
    if name in TORCHVISION:
        return _tv_spec(name)
    raise ValueError(f"Unknown model {name!r}; known: {', '.join(list(BUILTIN) + list(TORCHVISION))}")


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass at batch 1, counted for Conv2d and Linear."""
    return sum(row["macs"] for row in layer_table(module, input_shape))


def layer_table(module: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """One row per leaf layer, in execution order: name, type, output shape, parameters, MACs."""
    rows: list[dict] = []

    def hook(mod, inp, out, name):
        macs = 0
        if isinstance(mod, nn.Conv2d):
            macs = out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            macs = out.numel() * mod.in_features
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()
        rows.append({"layer": name, "type": type(mod).__name__, "output_shape": "x".join(map(str, shape)),
                     "params": sum(p.numel() for p in mod.parameters(recurse=False)), "macs": int(macs)})

    if isinstance(module, torch.jit.ScriptModule):
        return []  # TorchScript hides its layers from hooks
    handles = [m.register_forward_hook(lambda mod, i, o, n=n or type(m).__name__: hook(mod, i, o, n))
               for n, m in module.named_modules() if not list(m.children())]
    try:
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return rows


def finish_loading(spec: ModelSpec, module: nn.Module, info: dict | None = None) -> LoadedModel:
    try:
        module.eval()
    except NotImplementedError:  # torch.export programs are already in inference form
        pass
    for p in module.parameters():
        p.requires_grad_(False)
    state = module.state_dict()
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"{spec.name}: the weights contain NaN or inf values (in {', '.join(bad[:5])}"
                         f"{' and more' if len(bad) > 5 else ''}); such a model cannot be evaluated or quantized")
    params = sum(p.numel() for p in module.parameters())
    macs = count_macs(module, spec.input_shape)
    info = dict(info or {})
    info.setdefault("sha256", weights_digest(state))
    return LoadedModel(spec, module, params, macs, info)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names and bytes: the model's identity whatever file it came from."""
    h = hashlib.sha256()
    for name, t in state.items():
        h.update(name.encode())
        h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or the common {'state_dict': ...} / {'model': ...} wrappers."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return obj
    raise ModelUnavailable("The file is not a state_dict (a mapping of parameter names to tensors)")


def load_state_dict_into(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:6]
        raise ModelUnavailable(f"{what} does not match the architecture: " + " ".join(lines)) from None


def safe_torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code-running pickles, zip errors for junk
        raise ModelUnavailable(
            f"{path.name} cannot be loaded safely: only plain tensors are accepted "
            f"(weights_only=True refused it: {type(exc).__name__})"
        ) from None


def _load_builtin(spec: ModelSpec, weights: Path | None) -> LoadedModel:
    path = weights or (ASSETS / f"{spec.name}.pt")
    if not path.is_file():
        raise ModelUnavailable(
            f"The checkpoint {path} is missing. Recreate it with: python -m qcore train {spec.name}"
        )
    module = spec.build()
    load_state_dict_into(module, unwrap_state_dict(safe_torch_load(path)), path.name)
    info = {}
    meta = path.with_suffix(".json")
    if meta.is_file():
        info = json.loads(meta.read_text())
    return finish_loading(spec, module, info)


def torchvision_weight_paths(name: str) -> list[Path]:
    """Where a torchvision checkpoint is looked for before any download: hub cache, data dir."""
    fname = Path(_tv_weights(name).url).name
    dirs = [Path(torch.hub.get_dir()) / "checkpoints", Path(os.environ.get("QX_DATA_DIR", "data")) / "weights"]
    return [d / fname for d in dirs]


def _load_torchvision(spec: ModelSpec, weights: Path | None, download: bool) -> LoadedModel:
    module = spec.build()
    candidates = [weights] if weights else torchvision_weight_paths(spec.name)
    found = next((p for p in candidates if p.is_file()), None)
    if found is not None:
        state = unwrap_state_dict(safe_torch_load(found))
        load_state_dict_into(module, state, found.name)
        return finish_loading(spec, module, {"weights": str(found)})
    if weights is not None:
        raise ModelUnavailable(f"Weights file {weights} does not exist")
    if not download:
        raise ModelUnavailable(_offline_message(spec.name, candidates))
    try:
        state = _tv_weights(spec.name).get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError offline, HTTP errors, hash mismatch
        raise ModelUnavailable(
            f"Downloading {spec.name} weights failed ({type(exc).__name__}). " + _offline_message(spec.name, candidates)
        ) from None
    module.load_state_dict(state)
    return finish_loading(spec, module, {"weights": "downloaded"})


def _offline_message(name: str, candidates: list[Path]) -> str:
    return (
        f"Pretrained weights for {name} are not on this machine and cannot be downloaded offline. "
        f"Copy {candidates[0].name} into {candidates[0].parent} (torch hub cache) or {candidates[-1].parent}, "
        "or pass a local file with --weights."
    )


def load_model(name: str, weights: str | Path | None = None, download: bool = True) -> LoadedModel:
    """Load a registered model by name, with weights from its source or an explicit file."""
    spec = get_spec(name)
    weights = Path(weights) if weights else None
    if spec.family == "builtin":
        return _load_builtin(spec, weights)
    return _load_torchvision(spec, weights, download)
