"""The per-layer check of real INT8 against the simulation names the layer that departs."""

from __future__ import annotations

import copy

import pytest
import torch

from qcore.quant.qconfig import QuantConfig
from qcore.quant.build import calibrated_sim
from qcore.runtime.backends import ort as ort_backend
from qcore.runtime.layer_check import check_layers, first_divergent
from qcore.zoo.builtin_nets import FMResNet
from tests.helpers import randomized


def _sim(model, config=None):
    g = torch.Generator().manual_seed(0)
    return calibrated_sim(model, config or QuantConfig(), [torch.rand(16, 1, 28, 28, generator=g) * 2 - 1])


@pytest.mark.parametrize("symmetric", [False, True])
def test_an_int8_model_built_from_its_own_sim_departs_nowhere(tmp_path, symmetric):
    """Symmetric (signed) activation grids are stored as uint8 with the zero-point moved by 128."""
    torch.manual_seed(0)
    sim = _sim(randomized(FMResNet((8, 16, 32), (1, 1, 1))), QuantConfig().with_default(act_symmetric=symmetric))
    runner = ort_backend.int8_runner(sim, (1, 28, 28), tmp_path, 1, "u8")
    checks = check_layers(sim, runner.path, torch.rand(4, 1, 28, 28) * 2 - 1)
    assert [c.name for c in checks] == [q.name for q in sim.int_quantizers()]
    assert first_divergent(checks) is None and all(c.max_steps <= 3 for c in checks)


def _scrambled_int8(tmp_path):
    """(the sim, the U8S8 runner of a copy whose layers.1.conv1 weights were scrambled)."""
    torch.manual_seed(0)
    sim = _sim(randomized(FMResNet((8, 16, 32), (1, 1, 1))))
    broken = copy.deepcopy(sim)
    with torch.no_grad():
        w = broken.weight_layers["layers.1.conv1"].layer.weight
        w.copy_(w.flatten()[torch.randperm(w.numel())].reshape(w.shape))
    broken.weights_changed()
    return sim, ort_backend.int8_runner(broken, (1, 28, 28), tmp_path, 1, "u8")


def test_a_layer_that_computes_something_else_is_named_first(tmp_path):
    """The INT8 model of a sim whose layers.1.conv1 weights were scrambled, checked against the
    original sim: everything before that layer agrees, it departs."""
    sim, runner = _scrambled_int8(tmp_path)
    checks = check_layers(sim, runner.path, torch.rand(4, 1, 28, 28) * 2 - 1)
    first = first_divergent(checks)
    assert first is not None and first.name == "layers.1.conv1", [(c.name, c.off_fraction, c.max_steps) for c in checks]
    names = [c.name for c in checks]
    assert all(not c.divergent for c in checks[: names.index("layers.1.conv1")])


def test_the_check_holds_one_image_at_a_time_and_tallies_them_all(tmp_path, monkeypatch):
    """Every layer's output for a batch at once took ResNet50's deploy past 4.7 GB (issue 23): ONNX
    Runtime and the sim see one image per pass, and the tallies add up to the whole batch."""
    sim, runner = _scrambled_int8(tmp_path)
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    singles = [check_layers(sim, runner.path, x[i:i + 1]) for i in range(3)]
    batches = []
    real_session = ort_backend.session

    def spying_session(*args, **kwargs):
        sess = real_session(*args, **kwargs)
        run = sess.run
        sess_run = lambda names, feeds: batches.append(feeds["x"].shape[0]) or run(names, feeds)  # noqa: E731
        return type("Spy", (), {"run": staticmethod(sess_run)})()

    monkeypatch.setattr(ort_backend, "session", spying_session)
    whole = check_layers(sim, runner.path, x)
    assert batches == [1, 1, 1]
    for i, c in enumerate(whole):
        parts = [s[i] for s in singles]
        assert c.values == sum(p.values for p in parts) == 3 * parts[0].values
        assert c.max_steps == max(p.max_steps for p in parts)
        assert c.off_fraction == pytest.approx(sum(p.off_fraction for p in parts) / 3)
    assert any(c.off_fraction > 0 for c in whole)  # the scrambled layer makes the tallies non-trivial
