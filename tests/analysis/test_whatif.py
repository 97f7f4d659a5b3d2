"""The what-if session: re-running only the suffix after a layer gives the numbers a full evaluation gives, a
weight edit re-collects the later statistics as a fresh calibration would, Reset restores, Keep moves the base."""

import pytest
import torch

from qcore.analysis.evaluate import sqnr_db
from qcore.analysis.whatif import WhatIf
from qcore.quant.build import calibrated_sim
from qcore.quant.qconfig import QuantConfig
from qcore.zoo.builtin_nets import FMResNet
from qcore.zoo.models import ModelSpec, finish_loading, get_spec
from tests.helpers import randomized

CONV, ADD = "layers.1.conv1", "add_1"


def small_resnet():
    """A small residual net (skip connections: the suffix needs values from before the layer) as a user model."""
    torch.manual_seed(0)
    net = randomized(FMResNet((8, 16, 32), (1, 1, 1)))
    base = get_spec("fm_resnet")
    spec = ModelSpec("small_resnet", "user", "small residual net", (1, 28, 28), base.preprocess, base.class_names,
                     "fashion-mnist", "test", lambda: net)
    return finish_loading(spec, net)


@pytest.fixture(scope="module")
def loaded():
    return small_resnet()


def session(loaded, channels_last=True):
    return WhatIf.build(loaded, QuantConfig(), calib_size=64, eval_size=300, channels_last=channels_last)


def _full(w: WhatIf, layer: str) -> tuple[float, float]:
    """Accuracy and the layer's SQNR from full forward passes of the session's sim as it is configured now."""
    with torch.no_grad(), w.sim.capture([layer]) as rec:
        outs = [w.sim(x) for x in w.eval]
    test = torch.cat([r[2] for r in rec])[: len(w.layer.reference)]
    return w._accuracy(outs), sqnr_db(w.layer.reference, test)


@pytest.mark.slow
@pytest.mark.parametrize("layer", [CONV, ADD, "fc"])
def test_the_suffix_gives_what_a_full_pass_gives(loaded, layer):
    w = session(loaded)
    base = w.choose(layer)
    assert base.accuracy == w.base_accuracy and base.changes == {}
    for changes in ({"act_bits": 3}, {"act_clip": (0.0, 0.5)}):
        r = w.edit(**changes)
        acc, sqnr = _full(w, layer)
        assert r.accuracy == acc and r.layer_sqnr_db == pytest.approx(sqnr, rel=1e-9, abs=1e-9)
        assert r.layer_sqnr_db < base.layer_sqnr_db  # 3 bits, or a clip far inside the range, is worse


def _ranges(sim):
    return {q.name: q.range for q in sim.quantizers.values()}


@pytest.mark.slow
@pytest.mark.parametrize("changes", [{"act_clip": (0.0, 1.0)}, {"weight_bits": 3}, {"weight_granularity": "tensor"},
                                     {"enabled": False}])
def test_an_edit_equals_a_fresh_calibration_of_the_edited_config(loaded, changes):
    """What Sensitivity, QAT and Deploy build once the edit is kept: calibrated_sim of the edited config."""
    w = session(loaded, channels_last=False)
    w.choose(CONV)
    r = w.edit(**changes)
    fresh = calibrated_sim(loaded.module, w.config.with_layer(CONV, **changes), w.inputs.calib_batches)
    with torch.no_grad():
        acc = w._accuracy([fresh(x) for x in w.eval])
    assert r.accuracy == acc and _ranges(w.sim) == _ranges(fresh)
    assert r.recalibrated == (0 if "act_clip" in changes else len(w.layer.later)) and r.changes == changes


def test_reset_restores_the_current_config(loaded):
    w = session(loaded)
    base = w.choose(CONV)
    ranges = _ranges(w.sim)
    edited = w.edit(weight_bits=2, act_bits=3)
    assert edited.recalibrated > 0 and _ranges(w.sim) != ranges
    back = w.reset()
    assert (back.accuracy, back.layer_sqnr_db, back.changes) == (base.accuracy, base.layer_sqnr_db, {})
    assert _ranges(w.sim) == ranges and w.sim.stats == w.base_stats
    assert w.edit(act_bits=8).changes == {}  # the current value is no change


def test_keep_makes_the_edit_the_current_config(loaded):
    w = session(loaded)
    w.choose(ADD)
    edited = w.edit(act_clip=(0.0, 1.0))
    config = w.keep()
    assert config.for_layer(ADD).act_clip == (0.0, 1.0) and w.config == config
    again = w.edit()
    assert (again.accuracy, again.base_accuracy, again.delta_sqnr_db) == (edited.accuracy, edited.accuracy, 0.0)
    w.choose(CONV)  # another layer, measured from the kept config
    assert w.layer.base.accuracy == edited.accuracy
