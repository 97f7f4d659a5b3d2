"""timm architectures with the user's weights file, and their preprocessing from timm's config.

Weights never come from the hub here (offline): `timm.create_model(name, pretrained=False)` plus
the user's file. The input size, crop fraction, interpolation, mean and std come from the
architecture's pretrained config (`timm.data.resolve_data_config`), as timm evaluates it.

timm models use fused modules the simulation cannot see into (BatchNormAct2d is a BatchNorm2d
subclass that also applies its activation; torch.fx traces into it as functional batch norm), so a
timm model is exported with torch.export and lifted back to plain Conv2d/BatchNorm2d/activation
modules (`aten_lift`): the same path as an uploaded .pt2 program.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from qcore.zoo.aten_lift import lift_exported

__all__ = ["TIMM_PREFIX", "is_timm_arch", "timm_name", "timm_names", "timm_data_config", "build_timm",
           "export_and_lift"]

TIMM_PREFIX = "timm:"


def is_timm_arch(arch: str | None) -> bool:
    return bool(arch) and arch.startswith(TIMM_PREFIX)


def timm_name(arch: str) -> str:
    """'timm:efficientnet_lite0' -> 'efficientnet_lite0', checked against timm's registry."""
    import timm

    name = arch[len(TIMM_PREFIX):] if is_timm_arch(arch) else arch
    if not timm.is_model(name):
        close = timm.list_models(f"*{name[:6]}*")[:8] if name else []
        raise ValueError(f"timm has no architecture {name!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    return name


def timm_names() -> list[str]:
    """Every architecture timm can build (for the app's picker)."""
    import timm

    return timm.list_models()


def build_timm(arch: str, num_classes: int | None = None, in_chans: int | None = None) -> nn.Module:
    import timm

    kwargs = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans)) if v is not None}
    return timm.create_model(timm_name(arch), pretrained=False, **kwargs).eval()


def timm_data_config(module: nn.Module) -> dict:
    """input_size, interpolation, mean, std, crop_pct of the architecture's pretrained config."""
    from timm.data import resolve_data_config

    return dict(resolve_data_config({}, model=module))


def export_and_lift(module: nn.Module, input_shape: tuple[int, int, int]) -> fx.GraphModule:
    """torch.export with a dynamic batch, then lifted to plain layer modules."""
    x = torch.zeros(2, *input_shape)
    with torch.no_grad():
        program = torch.export.export(module.eval(), (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    return lift_exported(program)
