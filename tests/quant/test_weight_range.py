"""The weight range per CPU: 7-bit weights where u8 x s8 pairs would saturate, the same in the
simulation and in the real INT8 backends."""

from __future__ import annotations

import pytest
import torch

from qcore.quant.isa import cpu_isa
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.zoo.builtin_nets import FMResNet
from tests.helpers import randomized


def test_auto_becomes_reduced_without_vnni_and_full_with_it():
    assert QuantConfig().resolved(vnni=False).weight_range == "reduced"
    assert QuantConfig().resolved(vnni=True).weight_range == "full"
    assert QuantConfig(weight_range="full").resolved(vnni=False).weight_range == "full"  # an explicit choice stands
    assert QuantConfig().resolved().weight_range == ("full" if cpu_isa().vnni else "reduced")
    with pytest.raises(ValueError, match="weight_range"):
        QuantConfig(weight_range="half")
    back = QuantConfig.from_json(QuantConfig(weight_range="reduced").to_json())
    assert back.weight_range == "reduced" and QuantConfig.from_dict({}).weight_range == "auto"


def test_reduced_weights_are_seven_bit_and_lower_bit_layers_keep_their_bits():
    cfg = QuantConfig(weight_range="reduced").with_layer("fc", weight_bits=4)
    assert cfg.for_layer("conv").weight_bits == 7 and cfg.for_layer("fc").weight_bits == 4
    scheme = cfg.for_layer("conv").weight_scheme()
    assert (scheme.qmin, scheme.qmax) == (-64, 63)
    assert QuantConfig(weight_range="full").for_layer("conv").weight_bits == 8


def test_the_sim_records_what_auto_became_and_deploys_weights_in_range():
    torch.manual_seed(0)
    model = randomized(FMResNet((8, 16, 32), (1, 1, 1)))
    sim = QuantSim(model, QuantConfig())
    assert sim.config.weight_range == ("full" if cpu_isa().vnni else "reduced")
    sim.configure(QuantConfig(weight_range="reduced"))
    for wl in sim.weight_layers.values():
        values, scale, _ = wl.int8_weight()
        ints = torch.round(values / scale.reshape(-1, *([1] * (values.dim() - 1))))
        assert ints.min() >= -64 and ints.max() <= 63
    assert sim.config.to_dict()["weight_range"] == "reduced"


def test_layer_overrides_store_the_layers_own_bits_not_the_reduced_view():
    cfg = QuantConfig(weight_range="reduced").with_layer("conv1", act_bits=6)
    assert dict(cfg.layers)["conv1"].weight_bits == 8  # stored as configured
    assert cfg.for_layer("conv1").weight_bits == 7  # narrowed only where it is used
    full = QuantConfig.from_json(cfg.to_json()).__class__.from_dict({**cfg.to_dict(), "weight_range": "full"})
    assert full.for_layer("conv1").weight_bits == 8
