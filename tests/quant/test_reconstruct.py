"""Block-wise reconstruction (BRECQ with QDrop's mixed inputs): the graph as a chain of blocks, and rounding fitted
per block."""

import pytest
import torch

from qcore.quant.build import calibrated_sim
from qcore.quant.qconfig import QuantConfig, parse_steps
from qcore.quant.quantsim import QuantSim
from qcore.quant.recovery.blocks import split_blocks
from qcore.quant.recovery.reconstruct import ACT_LR, reconstruct_blocks
from qcore.zoo.inputs import prepare_inputs
from qcore.zoo.models import load_model

W4_TENSOR = QuantConfig().with_default(weight_bits=4, weight_granularity="tensor")


@pytest.fixture(scope="module")
def resnet_inputs():
    return prepare_inputs("fm_resnet", calib_size=64, eval_size=200, eval_batch=100)


@pytest.mark.parametrize("model", ["fm_resnet", "fm_mobilenetv2", "fm_vit"])
def test_the_blocks_run_in_turn_are_the_sims_forward(model):
    sim = QuantSim(load_model(model).module, W4_TENSOR)
    x = torch.randn(3, 1, 28, 28)
    sim.collect_stats([x])
    sim.apply_ranges()
    blocks = split_blocks(sim)
    assert len(blocks) > 2
    layers = [n for b in blocks for n in b.layers]
    assert sorted(layers) == sorted(sim.weight_layers)  # every layer in exactly one block
    assert all(len(b.layers) >= 2 for b in blocks)
    for quantized in (True, False):
        with torch.no_grad(), (sim.only() if quantized else sim.disabled()):
            whole, chained = sim.model(x), x
            for b in blocks:
                chained = b.module(chained)
        torch.testing.assert_close(chained, whole, rtol=0, atol=0)


def test_a_residual_block_keeps_its_shortcut_with_its_convolutions():
    sim = QuantSim(load_model("fm_resnet").module, W4_TENSOR)
    blocks = {tuple(b.layers) for b in split_blocks(sim)}
    assert ("layers.2.conv1", "layers.2.conv2", "layers.2.shortcut.0") in blocks


def test_reconstruction_rounds_onto_the_grid_and_lowers_each_blocks_error(resnet_inputs):
    sim = calibrated_sim(resnet_inputs.loaded.module, W4_TENSOR, resnet_inputs.calib_batches)
    original = {n: wl.layer.weight.detach().clone() for n, wl in sim.weight_layers.items()}
    grids = {n: wl.grid(original[n], wl.effective_scheme(original[n]))[0] for n, wl in sim.weight_layers.items()}
    x = resnet_inputs.calib_batches[0][:16]
    with sim.disabled():
        fp32 = sim(x)
    result = reconstruct_blocks(sim, resnet_inputs.calib_batches, iters=40)["blocks"]
    for name, wl in sim.weight_layers.items():
        assert wl.pinned, name
        levels = wl.layer.weight.detach() / grids[name]
        torch.testing.assert_close(levels, levels.round(), atol=1e-3, rtol=0)  # on the grid
        assert float((levels.round() - (original[name] / grids[name]).round()).abs().max()) <= 1  # within a step
    assert sum(r["flipped"] for r in result.values()) > 0
    assert all(r["mse"] < r["mse_nearest"] for r in result.values()), result
    with sim.disabled():
        torch.testing.assert_close(sim(x), fp32)  # the FP32 reference is still the FP32 network


def test_a_block_holds_only_the_images_its_capture_budget_allows(resnet_inputs, monkeypatch):
    from qcore.quant.recovery import reconstruct

    sim = calibrated_sim(resnet_inputs.loaded.module, W4_TENSOR, resnet_inputs.calib_batches)
    monkeypatch.setattr(reconstruct, "CAPTURE_BUDGET_BYTES", 20 * 3 * 16 * 28 * 28 * 4)
    result = reconstruct.reconstruct_blocks(sim, resnet_inputs.calib_batches, iters=3)["blocks"]
    total = sum(len(b) for b in resnet_inputs.calib_batches)
    assert 1 <= result["block 1"]["images"] < total


def test_brecq_is_a_recovery_step_with_its_settings(resnet_inputs):
    """Its settings reach it: the activation steps stay as calibrated by default and are learned with act_lr."""
    config = QuantConfig(recovery=parse_steps("cle,brecq:iters=10;drop=0")).with_default(weight_bits=4)
    sim = calibrated_sim(resnet_inputs.loaded.module, config, resnet_inputs.calib_batches)
    assert [r.name for r in sim.recovery_results] == ["cle", "brecq"]
    assert sim.recovery_results[1].changes["blocks"] and not sim.learned_ranges
    assert not any("activation_steps" in b for b in sim.recovery_results[1].changes["blocks"].values())
    learning = QuantConfig(recovery=parse_steps("brecq:iters=10;act_lr=2e-5")).with_default(weight_bits=4)
    sim = calibrated_sim(resnet_inputs.loaded.module, learning, resnet_inputs.calib_batches)
    assert all("activation_steps" in b for b in sim.recovery_results[0].changes["blocks"].values())


@pytest.mark.parametrize("step, function", [("brecq", "reconstruct_blocks"), ("adaround", "adaround")])
def test_the_seed_setting_reaches_the_rounding_step(resnet_inputs, monkeypatch, step, function):
    """`seed=` picks the order the images are drawn in: the run-to-run spread of a rounding method is measured by
    running it with several seeds (README), so the setting must reach the method, and 0 is the default."""
    import qcore.quant.recovery as recovery

    seen = []
    monkeypatch.setattr(recovery, function, lambda *a, **kw: seen.append(kw["seed"]) or {})
    for text in (step, f"{step}:seed=3"):
        calibrated_sim(resnet_inputs.loaded.module, QuantConfig(recovery=parse_steps(text)), resnet_inputs.calib_batches)
    assert seen == [0, 3]


@pytest.mark.parametrize("symmetric", [False, True])
def test_learned_activation_steps_are_kept_where_they_help_and_calibration_keeps_them(resnet_inputs, symmetric):
    """The blocks' activation step sizes are learned with the rounding; a block keeps its learned steps only with a
    lower output error, and then a new calibration (statistics and ranges again, as the recovery pipeline does) keeps
    them exactly, on a symmetric grid too, while an explicit method still gets its own ranges."""
    config = W4_TENSOR.with_default(act_symmetric=symmetric)
    sim = calibrated_sim(resnet_inputs.loaded.module, config, resnet_inputs.calib_batches)
    result = reconstruct_blocks(sim, resnet_inputs.calib_batches, iters=40, act_lr=ACT_LR)["blocks"]
    kept = {name: steps[1] for r in result.values() if r["activation_steps_kept"]
            for name, steps in r["activation_steps"].items()}
    assert kept and set(kept) == set(sim.learned_ranges)
    assert any(abs(learned - calibrated) > 1e-6 * calibrated for r in result.values()
               for calibrated, learned in r["activation_steps"].values())
    for r in result.values():  # a dropped block's quantizers keep their calibrated step
        for name, (calibrated, _) in r["activation_steps"].items():
            if not r["activation_steps_kept"]:
                assert float(sim.quantizer(name).scale) == pytest.approx(calibrated, rel=1e-6)
    sim.collect_stats(resnet_inputs.calib_batches)
    sim.apply_ranges()
    for name, step in kept.items():
        assert float(sim.quantizer(name).scale) == pytest.approx(step, rel=1e-6), name
        assert sim.quantizer(name).range.method == "brecq"
    sim.apply_ranges(method="max")
    assert all(sim.quantizer(name).range.method == "max" for name in kept)


def test_an_overshooting_step_size_is_dropped_not_kept(resnet_inputs):
    """A learning rate far too high makes the steps worse than calibrated: those blocks keep the calibrated ones."""
    sim = calibrated_sim(resnet_inputs.loaded.module, W4_TENSOR, resnet_inputs.calib_batches)
    result = reconstruct_blocks(sim, resnet_inputs.calib_batches, iters=20, act_lr=0.5)["blocks"]
    dropped = [r for r in result.values() if not r["activation_steps_kept"]]
    assert dropped
    for r in dropped:
        assert not set(r["activation_steps"]) & set(sim.learned_ranges)


def test_a_graph_with_two_outputs_is_refused_with_the_reason():
    from torch import nn

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            x = self.conv(x)
            return self.a(x), self.b(x)

    sim = QuantSim(TwoHeads(), W4_TENSOR)
    with pytest.raises(ValueError, match="output is its last computed tensor"):
        split_blocks(sim)


def test_a_large_block_takes_fewer_images_per_step(resnet_inputs, monkeypatch):
    """The autograd graph of a 224x224 block at 32 images per step is gigabytes: under a small budget the step
    takes fewer images (at least one), and the report says how many."""
    from qcore.quant.recovery import reconstruct

    sim = calibrated_sim(resnet_inputs.loaded.module, W4_TENSOR, resnet_inputs.calib_batches)
    monkeypatch.setattr(reconstruct, "CAPTURE_BUDGET_BYTES", 2**20)
    result = reconstruct.reconstruct_blocks(sim, resnet_inputs.calib_batches, iters=3)["blocks"]
    assert all(1 <= r["images_per_step"] < 32 for r in result.values())
    monkeypatch.setattr(reconstruct, "CAPTURE_BUDGET_BYTES", 2**30)
    assert reconstruct.reconstruct_blocks(sim, resnet_inputs.calib_batches, iters=3)["blocks"]["block 1"][
        "images_per_step"] == 32
