"""Model registry: built-in Fashion-MNIST nets, torchvision ImageNet classifiers, user uploads.

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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from qcore.zoo import builtin_nets
from qcore.zoo.data import FASHION_MNIST_CLASSES

__all__ = [
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
    "load_user_model",
    "count_macs",
    "finish_loading",
    "layer_table",
]

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEFAULT_MODEL = "fm_resnet"
MAX_UPLOAD_MB = float(os.environ.get("QX_MAX_UPLOAD_MB", "512"))


class ModelUnavailable(RuntimeError):
    """The model's weights or file cannot be had; the message tells the user what to do."""


@dataclass(frozen=True)
class Preprocess:
    """How raw uint8 images (N, C, H, W) become the model's float input."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    crop: int | None = None  # centre crop to this square size, after the loader's resize

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if x.shape[1] != self.channels:
            if x.shape[1] == 1 and self.channels == 3:
                x = x.expand(-1, 3, -1, -1)
            elif x.shape[1] == 3 and self.channels == 1:
                luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
                x = (x.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
            else:
                raise ValueError(f"cannot turn {x.shape[1]}-channel images into {self.channels} channels")
        if self.crop is not None and (x.shape[-1] != self.crop or x.shape[-2] != self.crop):
            h, w = x.shape[-2:]
            if h < self.crop or w < self.crop:
                raise ValueError(f"images are {h}x{w}; this model needs at least {self.crop}x{self.crop}")
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
            x = x[..., top: top + self.crop, left: left + self.crop]
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std


FM_PREPROCESS = Preprocess(mean=(0.2860,), std=(0.3530,), channels=1)
IMAGENET_PREPROCESS = Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), channels=3, crop=224)


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


def _unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or the common {'state_dict': ...} / {'model': ...} wrappers."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return obj
    raise ModelUnavailable("The file is not a state_dict (a mapping of parameter names to tensors)")


def _load_state_dict_into(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:6]
        raise ModelUnavailable(f"{what} does not match the architecture: " + " ".join(lines)) from None


def _safe_torch_load(path: Path):
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
    _load_state_dict_into(module, _unwrap_state_dict(_safe_torch_load(path)), path.name)
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
        state = _unwrap_state_dict(_safe_torch_load(found))
        _load_state_dict_into(module, state, found.name)
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


def _check_size(path: Path, max_mb: float) -> None:
    if not path.is_file():
        raise ModelUnavailable(f"{path} does not exist")
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_mb:
        raise ModelUnavailable(f"{path.name} is {size_mb:.0f} MB; the limit is {max_mb:.0f} MB (QX_MAX_UPLOAD_MB)")


def detect_format(path: Path) -> str:
    """'pt2' (torch.export), 'torchscript', or 'state_dict', from the file's contents."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith("serialized_exported_program.json") or "/models/" in n and n.endswith(".json") for n in names):
            return "pt2"
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
    return "state_dict"


def load_user_model(
    path: str | Path,
    arch: str | None = None,
    name: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
    class_names: tuple[str, ...] | None = None,
    max_mb: float = MAX_UPLOAD_MB,
) -> LoadedModel:
    """A user's model file: a state_dict for a known architecture, or a .pt2 program.

    A state_dict needs `arch` (a registry name); its class count may differ from the registry's
    (the final layer is rebuilt to match). A .pt2 file carries its own code and needs `input_shape`,
    unless its input matches the architecture given as `arch`. TorchScript is refused with the way
    out (it cannot be traced), and so is any model with nothing to quantize, or one that does not run
    at batch 1 and 2.
    """
    path = Path(path)
    _check_size(path, max_mb)
    fmt = detect_format(path)
    base = get_spec(arch) if arch else None
    shape = input_shape or (base.input_shape if base else None)
    if fmt == "torchscript":
        raise ModelUnavailable(
            f"{path.name} is TorchScript: its layers are compiled code that torch.fx cannot trace, so none of them "
            "could be quantized for real. Export the model with torch.export instead (torch.export.save("
            "torch.export.export(model, (x,), dynamic_shapes={'x': {0: torch.export.Dim.AUTO}}), 'model.pt2')), "
            "or upload its state_dict with the architecture it belongs to."
        )
    if fmt == "pt2":
        if shape is None:
            raise ModelUnavailable(f"{path.name} is a {fmt} file: give its input shape (C, H, W) or a base architecture")
        try:
            module = torch.export.load(str(path)).module()
        except Exception as exc:
            raise ModelUnavailable(f"{path.name} could not be loaded as {fmt}: {type(exc).__name__}: {exc}") from None
    else:
        state = _unwrap_state_dict(_safe_torch_load(path))  # refuse unsafe or junk files first
        if base is None:
            raise ModelUnavailable(
                f"{path.name} is a state_dict: choose the architecture it belongs to ({', '.join(BUILTIN)}, "
                f"{', '.join(TORCHVISION)})"
            )
        module = _build_for_state(base, state)
        _load_state_dict_into(module, state, path.name)
    out = _check_runs(module, shape, path.name, fmt)
    _check_quantizable(module, path.name, fmt)
    n_classes = out.shape[1]
    names = class_names or (base.class_names if base and len(base.class_names) == n_classes else None)
    names = names or tuple(str(i) for i in range(n_classes))
    preprocess = base.preprocess if base else Preprocess((0.5,) * shape[0], (0.5,) * shape[0], shape[0])
    spec = ModelSpec(
        name or f"user:{path.name}", "user", f"uploaded {fmt} ({path.name})", tuple(shape), preprocess,
        tuple(names), base.dataset if base and names == base.class_names else "user", str(path),
        lambda: module, 0,
    )
    return finish_loading(spec, module, {"format": fmt, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})


def _check_runs(module: nn.Module, shape, fname: str, fmt: str) -> torch.Tensor:
    """The model runs at batch 1 and at batch 2 (every experiment evaluates batches) and returns logits."""
    hint = " Export it with a dynamic batch: dynamic_shapes={'x': {0: torch.export.Dim.AUTO}}." if fmt == "pt2" else ""
    with torch.no_grad():
        for batch in (1, 2):
            try:
                out = module(torch.zeros(batch, *shape))
            except Exception as exc:
                more = hint if batch == 2 or "Guard failed" in str(exc) else ""
                raise ModelUnavailable(f"{fname} failed on a batch-{batch} {tuple(shape)} input: "
                                       f"{type(exc).__name__}: {exc}.{more}") from None
            if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != batch:
                raise ModelUnavailable(f"{fname} must return class logits of shape (N, classes)")
    return out


def _check_quantizable(module: nn.Module, fname: str, fmt: str) -> None:
    """Refuse a model in which the simulation would find nothing to quantize: every "INT8" number
    would then be the FP32 model's (issue: never a silent FP32 INT8)."""
    from qcore.quant.quantsim import QuantSim, TraceError

    try:
        sim = QuantSim(module)
    except TraceError as exc:
        raise ModelUnavailable(f"{fname}: {exc}") from None
    if not sim.weight_layers:
        why = (" A torch.export program calls aten.conv2d/aten.linear with the weights as inputs; qcore does not "
               "quantize those graphs yet: upload the state_dict with its architecture instead.") if fmt == "pt2" else ""
        raise ModelUnavailable(f"{fname} has no Conv2d or Linear layer qcore can quantize, so every INT8 number "
                               f"would be the FP32 model's.{why}")


def _build_for_state(base: ModelSpec, state: dict[str, torch.Tensor]) -> nn.Module:
    """Build the base architecture, resizing its last Linear to the checkpoint's class count."""
    module = base.build()
    last_name, last = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)][-1]
    w = state.get(f"{last_name}.weight")
    if w is not None and w.dim() == 2 and w.shape[0] != last.out_features and w.shape[1] == last.in_features:
        parent = module.get_submodule(last_name.rsplit(".", 1)[0]) if "." in last_name else module
        setattr(parent, last_name.rsplit(".", 1)[-1], nn.Linear(last.in_features, w.shape[0]))
    return module
