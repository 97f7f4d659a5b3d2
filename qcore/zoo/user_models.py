"""The user's own model file, in any format qcore can quantize for real, with its preprocessing.

Formats, each ending as an nn.Module whose Conv2d/Linear layers the simulation wraps:
- a state_dict (.pt/.pth/.bin/.safetensors) for a registry architecture or any timm architecture
  (`timm:NAME`); timm models are exported and lifted (see timm_models);
- a torch.export program (.pt2), lifted from aten calls back to layer modules (aten_lift);
- an ONNX file (.onnx), converted with onnx2torch (onnx_import);
- TorchScript is refused with the way out: its layers are compiled code no tracer can see into.

Every upload is checked before it is accepted: it runs at batch 1 and 2 (experiments evaluate
batches; a static-batch export is told how to export a dynamic one), it returns (N, classes) logits,
and the simulation finds layers to quantize in it (never a silent FP32 "INT8").
"""

from __future__ import annotations

import hashlib
import os
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from qcore.zoo.models import (BUILTIN, MAX_UPLOAD_MB, TORCHVISION, LoadedModel, ModelSpec, ModelUnavailable,
                              finish_loading, get_spec, imagenet_class_names, load_state_dict_into,
                              safe_torch_load, unwrap_state_dict)
from qcore.zoo.preprocess import Preprocess, preset
from qcore.zoo.timm_models import build_timm, export_and_lift, is_timm_arch, timm_data_config

__all__ = ["FORMATS", "detect_format", "load_user_model", "UPLOAD_TYPES"]

FORMATS = ("state_dict", "pt2", "onnx", "torchscript")
_EXPORT_LOAD_LOCK = threading.Lock()  # the weights-only switch is process-wide: one load at a time
UPLOAD_TYPES = ["pt", "pth", "bin", "safetensors", "pt2", "onnx", "ts"]
TORCHSCRIPT_FIX = (
    "Export the model with torch.export instead (torch.export.save(torch.export.export(model, (x,), "
    "dynamic_shapes={'x': {0: torch.export.Dim.AUTO}}), 'model.pt2')) or to ONNX, or upload its state_dict with "
    "the architecture it belongs to.")


def _check_size(path: Path, max_mb: float) -> None:
    if not path.is_file():
        raise ModelUnavailable(f"{path} does not exist")
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_mb:
        raise ModelUnavailable(f"{path.name} is {size_mb:.0f} MB; the limit is {max_mb:.0f} MB (QX_MAX_UPLOAD_MB)")


def detect_format(path: Path) -> str:
    """'pt2' (torch.export), 'torchscript', 'onnx' or 'state_dict', from the file's contents."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith("serialized_exported_program.json") or "/models/" in n and n.endswith(".json") for n in names):
            return "pt2"
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "state_dict"
    if path.suffix.lower() == ".onnx":
        return "onnx"
    return "state_dict"


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise ModelUnavailable(f"{path.name} is not a readable safetensors file ({type(exc).__name__})") from None
    return unwrap_state_dict(safe_torch_load(path))


def _from_state_dict(path: Path, arch: str | None, shape) -> tuple[nn.Module, tuple, dict | None]:
    """(module, input shape, timm data config or None) for a state_dict and its architecture."""
    state = _read_state(path)  # refuse unsafe or junk files first
    if arch is None:
        raise ModelUnavailable(
            f"{path.name} is a state_dict: choose the architecture it belongs to ({', '.join(BUILTIN)}, "
            f"{', '.join(TORCHVISION)}, or any timm architecture as timm:NAME)")
    if is_timm_arch(arch):
        try:
            probe = build_timm(arch)
        except ValueError as exc:
            raise ModelUnavailable(str(exc)) from None
        cfg = timm_data_config(probe)
        head = _tensor_of(state, probe.pretrained_cfg.get("classifier"))
        stem = _tensor_of(state, probe.pretrained_cfg.get("first_conv"))
        module = build_timm(arch, num_classes=int(head.shape[0]) if head is not None else None,
                            in_chans=int(stem.shape[1]) if stem is not None and stem.dim() == 4 else None)
        load_state_dict_into(module, state, path.name)
        shape = shape or (module.pretrained_cfg.get("in_chans", 3) if stem is None else int(stem.shape[1]),
                          *cfg["input_size"][1:])
        try:
            return export_and_lift(module, shape), shape, cfg
        except Exception as exc:  # torch.export refusing the model or the shape
            raise ModelUnavailable(f"{arch} could not be exported at input {tuple(shape)} for quantization: "
                                   f"{type(exc).__name__}: {(str(exc).strip().splitlines() or ['no message'])[0][:300]}") from None
    base = get_spec(arch)
    module = _build_for_state(base, state)
    load_state_dict_into(module, state, path.name)
    return module, shape or base.input_shape, None


def _tensor_of(state: dict, layer) -> torch.Tensor | None:
    """The weight of a layer named in timm's pretrained config (a name, or a tuple of names)."""
    name = layer[0] if isinstance(layer, (tuple, list)) and layer else layer
    return state.get(f"{name}.weight") if isinstance(name, str) else None


def _from_program(path: Path, fmt: str, shape) -> tuple[nn.Module, tuple[int, int, int]]:
    """The module and its (C, H, W) input: the one given, else the one the file declares."""
    if fmt == "torchscript":
        raise ModelUnavailable(f"{path.name} is TorchScript: its layers are compiled code that no tracer can see "
                               f"into, so none of them could be quantized for real. {TORCHSCRIPT_FIX}")
    if fmt == "onnx":
        from qcore.zoo.onnx_import import OnnxUnsupported, load_onnx

        try:
            module = load_onnx(path)
        except OnnxUnsupported as exc:
            raise ModelUnavailable(str(exc)) from None
        return module, _given(shape or module.meta["onnx_import"]["input_shape"], path, fmt)
    from qcore.zoo.aten_lift import lift_exported

    try:
        program = _safe_export_load(path)
        shape = _given(shape or _program_input_shape(program), path, fmt)
        return lift_exported(program), shape
    except ModelUnavailable:
        raise
    except Exception as exc:
        raise ModelUnavailable(f"{path.name} could not be loaded as a torch.export program: "
                               f"{type(exc).__name__}: {str(exc)[:300]}") from None


def _given(shape, path: Path, fmt: str) -> tuple[int, int, int]:
    if shape is None:
        raise ModelUnavailable(f"{path.name} is a {fmt} file whose input size is not fixed in it: "
                               "give its input shape (C, H, W)")
    return tuple(shape)


def _program_input_shape(program) -> tuple[int, int, int] | None:
    """(C, H, W) of a torch.export program's first input when the export fixed them (the batch may be
    dynamic); None when any of them is symbolic, so the user is asked."""
    names = program.graph_signature.user_inputs
    node = next((n for n in program.graph.nodes if n.op == "placeholder" and n.name in names), None)
    val = node.meta.get("val") if node is not None else None
    dims = tuple(getattr(val, "shape", ()))
    if len(dims) != 4 or not all(isinstance(d, int) for d in dims[1:]):
        return None
    return tuple(int(d) for d in dims[1:])


def _safe_export_load(path: Path):
    """torch.export.load without running code from the file: archives with pickled custom or opaque
    objects are refused, and every torch.load inside runs with weights_only=True (torch's own
    TORCH_FORCE_WEIGHTS_ONLY_LOAD switch; torch.export.load would otherwise fall back to full pickle)."""
    from torch.export.pt2_archive.constants import CUSTOM_OBJ_FILENAME_PREFIX, OPAQUE_OBJ_FILENAME_PREFIX

    with zipfile.ZipFile(path) as zf:
        objects = [n for n in zf.namelist()
                   if Path(n).name.startswith((CUSTOM_OBJ_FILENAME_PREFIX, OPAQUE_OBJ_FILENAME_PREFIX))]
    if objects:
        raise ModelUnavailable(f"{path.name} holds pickled Python objects ({', '.join(objects[:3])}); they could run "
                               "code when loaded, so the file is refused. Export the model with tensors only.")
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with _EXPORT_LOAD_LOCK:
            return torch.export.load(str(path))
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def _preprocessing(choice, shape, base: ModelSpec | None, timm_cfg: dict | None, overrides: dict | None) -> Preprocess:
    """The chosen preset (or a Preprocess), else the architecture's own, else ImageNet's for RGB inputs."""
    try:
        if isinstance(choice, Preprocess):
            pre = choice
        elif choice is None and base is not None:  # the architecture's own, with any overrides on top
            pre = replace(base.preprocess, **(overrides or {}))
        else:
            choice = choice or ("timm" if timm_cfg else ("imagenet" if shape[0] == 3 else "custom"))
            pre = preset(choice, tuple(shape), timm_cfg, **(overrides or {}))
    except (ValueError, TypeError) as exc:
        raise ModelUnavailable(f"preprocessing: {exc}") from None
    if pre.crop is not None and (shape[1] != shape[2] or pre.crop != shape[1]):
        raise ModelUnavailable(f"preprocessing crops {pre.crop}x{pre.crop} images, but the model takes "
                               f"{shape[1]}x{shape[2]} inputs: set the crop to the input size (square inputs only)")
    return pre


def load_user_model(
    path: str | Path,
    arch: str | None = None,
    name: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
    class_names: tuple[str, ...] | None = None,
    preprocess: str | Preprocess | None = None,
    preprocess_overrides: dict | None = None,
    max_mb: float = MAX_UPLOAD_MB,
) -> LoadedModel:
    """A user's model file (see the module docstring), checked and ready for every experiment.

    `arch` is a registry name or `timm:NAME` (state_dicts need one). `preprocess` is a preset name
    (imagenet, tf, timm, custom) or a Preprocess; `preprocess_overrides` sets mean, std, resize, crop,
    interpolation on top. A 1000-class model gets ImageNet's class names and ImageNet-labelled data.
    """
    path = Path(path)
    _check_size(path, max_mb)
    fmt = detect_format(path)
    base = get_spec(arch) if arch and not is_timm_arch(arch) else None
    shape = tuple(input_shape) if input_shape else None
    timm_cfg = None
    if fmt == "state_dict":
        module, shape, timm_cfg = _from_state_dict(path, arch, shape)
    else:
        module, shape = _from_program(path, fmt, shape or (base.input_shape if base else None))
    out = _check_runs(module, shape, path.name, fmt)
    _check_quantizable(module, path.name)
    pre = _preprocessing(preprocess, shape, base, timm_cfg, preprocess_overrides)
    names, dataset = _classes(out.shape[1], class_names, base)
    source = f"timm {arch[5:]} state_dict" if is_timm_arch(arch) else fmt
    spec = ModelSpec(
        name or f"user:{path.name}", "user", f"uploaded {source} ({path.name})", tuple(shape), pre,
        names, dataset, str(path), lambda: module, 0,
    )
    return finish_loading(spec, module, {"format": fmt, "arch": arch, "sha256": _file_digest(path)})


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _classes(n_classes: int, given: tuple[str, ...] | None, base: ModelSpec | None) -> tuple[tuple[str, ...], str]:
    """Class names and what they are: the given ones, the base architecture's, ImageNet's for 1000."""
    if given and len(given) == n_classes:
        return tuple(given), "user"
    if base is not None and len(base.class_names) == n_classes:
        return base.class_names, base.dataset
    if n_classes == 1000:
        return imagenet_class_names(), "imagenet"
    return tuple(str(i) for i in range(n_classes)), "user"


def _runs_at(module: nn.Module, shape, batch: int) -> bool:
    try:
        with torch.no_grad():
            module(torch.zeros(batch, *shape))
        return True
    except Exception:
        return False


def _check_runs(module: nn.Module, shape, fname: str, fmt: str) -> torch.Tensor:
    """The model runs at batch 1 and at batch 2 (every experiment evaluates batches) and returns logits.
    A model that fails at batch 1 but runs at batch 2 was exported with a fixed batch: say how to fix it."""
    hint = {"pt2": " Export it with a dynamic batch: dynamic_shapes={'x': {0: torch.export.Dim.AUTO}}.",
            "onnx": " Export it with a dynamic batch axis (dynamic_axes={'x': {0: 'batch'}})."}.get(fmt, "")
    with torch.no_grad():
        for batch in (1, 2):
            try:
                out = module(torch.zeros(batch, *shape))
            except Exception as exc:
                fixed = batch == 2 or "Guard failed" in str(exc) or _runs_at(module, shape, 2)
                more = (" It runs at one batch size only." + hint) if fixed and hint else ""
                first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                raise ModelUnavailable(f"{fname} failed on a batch-{batch} {tuple(shape)} input: "
                                       f"{type(exc).__name__}: {first}.{more}") from None
            if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != batch:
                raise ModelUnavailable(f"{fname} must return class logits of shape (N, classes)")
    return out


def _check_quantizable(module: nn.Module, fname: str) -> None:
    """Refuse a model in which the simulation would find nothing to quantize: every "INT8" number
    would then be the FP32 model's (never a silent FP32 INT8)."""
    from qcore.quant.quantsim import NothingQuantized, QuantSim, TraceError

    try:
        QuantSim(module)
    except (TraceError, NothingQuantized) as exc:
        raise ModelUnavailable(f"{fname}: {exc}") from None


def _build_for_state(base: ModelSpec, state: dict[str, torch.Tensor]) -> nn.Module:
    """Build the base architecture, resizing its last Linear to the checkpoint's class count."""
    module = base.build()
    linears = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return module
    last_name, last = linears[-1]
    w = state.get(f"{last_name}.weight")
    if w is not None and w.dim() == 2 and w.shape[0] != last.out_features and w.shape[1] == last.in_features:
        parent = module.get_submodule(last_name.rsplit(".", 1)[0]) if "." in last_name else module
        setattr(parent, last_name.rsplit(".", 1)[-1], nn.Linear(last.in_features, w.shape[0]))
    return module

