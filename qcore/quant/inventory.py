"""Which layers a simulation quantizes and which stay float, and why: every run report carries one, so no
FP32 number passes for an INT8 one. Built by `QuantSim.layer_inventory()`; plain data, nothing live."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["FloatLayer", "LayerInventory"]


@dataclass(frozen=True)
class FloatLayer:
    """A layer with weights that stays float, and the reason (the configuration, or an op the simulation
    cannot quantize)."""

    layer: str
    reason: str


@dataclass(frozen=True)
class LayerInventory:
    quantized_layers: tuple[str, ...]  # the Conv2d/Linear layers whose weights are quantized
    float_layers: tuple[FloatLayer, ...]

    def to_dict(self) -> dict:
        """{"quantized_layers": [names], "float_layers": [{"layer", "reason"}]}, lists as JSON has them."""
        d = asdict(self)
        return {k: list(v) for k, v in d.items()}
