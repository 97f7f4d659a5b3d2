"""timm/torchvision architectures with random but calibrated weights, as the fidelity matrix builds them."""

from __future__ import annotations

import torch
from torch import nn

from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.quant.build import calibrated_sim
from tests.helpers import data_initialized, with_dead_channels

# timm names; resnet50/regnety are torchvision's families too, built here by timm like the others
ARCHITECTURES = ("resnet50", "mobilenetv2_100", "mobilenetv3_large_100", "tf_efficientnet_lite0", "efficientnet_b0",
                 "regnety_002", "convnext_atto", "vit_tiny_patch16_224")


def lifted(name: str, size: int = 224) -> nn.Module:
    """The architecture as a user's timm model reaches the simulation: exported and lifted to layers."""
    import timm

    from qcore.zoo.timm_models import export_and_lift

    torch.manual_seed(0)
    return export_and_lift(timm.create_model(name, pretrained=False).eval(), (3, size, size))


def calibrated(name: str, size: int = 224, seed: int = 0) -> tuple[QuantSim, torch.Tensor]:
    """(sim, a held-out image): BN statistics re-estimated on 2 random images, then BN randomized with
    10% dead channels (gamma ~0, real beta), calibrated on those 2 images."""
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(seed))
    model = with_dead_channels(data_initialized(lifted(name, size), x[:2], seed), 0.1, seed)
    return calibrated_sim(model, QuantConfig(), [x[:2]]), x[2:]
