"""Accuracy-recovery steps: each does what its paper says, and real INT8 carries what it did."""

import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from qcore.analysis.evaluate import agreement, logits
from qcore.quant.qconfig import QuantConfig, RecoveryStep, parse_steps
from qcore.quant.quantsim import QuantSim
from qcore.quant.build import calibrated_sim
from qcore.quant.recovery.bias import _mean_outputs, correct_bias, smooth
from qcore.quant.recovery.cle import choose_rounds, equalize
from qcore.quant.recovery.graph import layer_pairs
from qcore.quant.recovery.rounding import adaround
from qcore.zoo.inputs import prepare_inputs
from qcore.zoo.models import BUILTIN


@pytest.fixture(scope="module")
def resnet_inputs():
    return prepare_inputs("fm_resnet", calib_size=64, eval_size=200, eval_batch=100)


def spread(w: torch.Tensor) -> float:
    r = w.abs().flatten(1).amax(1)
    return float(r.max() / r.clamp_min(1e-8).min())


def test_cle_keeps_the_fp32_function_and_narrows_per_channel_ranges(resnet_inputs):
    sim = QuantSim(resnet_inputs.loaded.module)
    x = resnet_inputs.calib_batches[0]
    pairs = layer_pairs(sim)
    assert len(pairs) == 6  # conv1 -> ReLU -> conv2 in each of the six residual blocks
    before = {p.first: spread(sim.weight_layers[p.first].layer.weight) for p in pairs}
    with sim.disabled():
        ref = sim(x)
    changes = equalize(sim)
    with sim.disabled():
        torch.testing.assert_close(sim(x), ref, rtol=1e-4, atol=1e-4)
    after = {p.first: spread(sim.weight_layers[p.first].layer.weight) for p in pairs}
    assert all(after[k] < before[k] for k in before), (before, after)
    assert changes["relu6_replaced_by_relu"] == 0 and len(changes["scales"]) == 6


def test_cle_on_mobilenet_replaces_relu6_in_equalized_pairs():
    sim = QuantSim(BUILTIN["fm_mobilenetv2"].build().eval())
    changes = equalize(sim)
    assert changes["relu6_replaced_by_relu"] > 0
    assert any(a.endswith(".block.0") and b.endswith(".block.3") for a, b in changes["pairs"])  # expand -> depthwise


def test_cle_chooses_its_passes_on_calibration_images_and_leaves_the_sim_alone():
    """The pass count over chained pairs is the one whose calibrated copy is closest to float on the calibration
    images; the choice works on copies, and the chosen count is what the step then runs and reports."""
    inp = prepare_inputs("fm_mobilenetv2", calib_size=64, eval_size=100)
    config = QuantConfig(recovery=parse_steps("cle")).with_default(weight_bits=4, weight_granularity="tensor")
    sim = QuantSim(inp.loaded.module, config)
    before = {n: wl.layer.weight.detach().clone() for n, wl in sim.weight_layers.items()}
    rounds, scores = choose_rounds(sim, inp.calib_batches, candidates=(1, 8))
    assert set(scores) == {1, 8} and rounds == max(scores, key=scores.get) and scores[1] != scores[8]
    assert all(torch.equal(before[n], wl.layer.weight) for n, wl in sim.weight_layers.items())
    built = calibrated_sim(inp.loaded.module, config, inp.calib_batches)
    changes = built.recovery_results[0].changes
    assert changes["rounds"] == max(changes["rounds_logit_sqnr_db"], key=changes["rounds_logit_sqnr_db"].get)
    fixed = calibrated_sim(inp.loaded.module, QuantConfig(recovery=parse_steps("cle:rounds=8")).with_default(
        weight_bits=4, weight_granularity="tensor"), inp.calib_batches)
    assert fixed.recovery_results[0].changes["rounds"] == 8 and not fixed.recovery_results[0].changes["rounds_logit_sqnr_db"]


def test_bias_correction_brings_each_layers_mean_output_back_to_fp32(resnet_inputs):
    config = QuantConfig().with_default(weight_bits=4, weight_granularity="tensor")
    sim = calibrated_sim(resnet_inputs.loaded.module, config, resnet_inputs.calib_batches)
    names, xs = list(sim.weight_layers), resnet_inputs.calib_batches
    with sim.disabled():
        reference = _mean_outputs(sim, names, xs)
    gap = lambda: {n: float((m - reference[n]).abs().max()) for n, m in _mean_outputs(sim, names, xs).items()}  # noqa: E731
    before = gap()
    correct_bias(sim, xs)
    after = gap()
    assert max(before.values()) > 1e-2
    assert all(after[n] <= 1e-4 + 1e-3 * before[n] for n in names), after


def test_bias_correction_takes_its_means_over_a_sample_of_large_inputs(resnet_inputs, monkeypatch):
    """The per-layer passes cost images x layers: past BIAS_VALUES input values (256 ImageNet images) the means
    come from the first images, and the report says how many. (GPTQ's Hessian takes the same first_images.)"""
    from qcore.quant.recovery import bias

    config = QuantConfig().with_default(weight_bits=4, weight_granularity="tensor")
    sim = calibrated_sim(resnet_inputs.loaded.module, config, resnet_inputs.calib_batches)
    assert correct_bias(sim, resnet_inputs.calib_batches)["images"] == 64  # 28x28: every image
    monkeypatch.setattr(bias, "BIAS_VALUES", 40 * 28 * 28)
    seen = []
    monkeypatch.setattr(bias, "_mean_outputs", lambda sim, names, xs: seen.append(sum(len(x) for x in xs))
                        or {n: torch.zeros(sim.weight_layers[n].layer.weight.shape[0]) for n in names})
    assert correct_bias(sim, resnet_inputs.calib_batches)["images"] == 40
    assert set(seen) == {40}  # the FP32 reference and every layer's pass: the same 40 images
    listed = list(resnet_inputs.calib_batches)
    assert correct_bias(sim, listed)["images"] == 40


def test_adaround_is_a_valid_rounding_and_lowers_the_layer_error(resnet_inputs):
    config = QuantConfig().with_default(weight_bits=4, weight_granularity="tensor")
    sim = calibrated_sim(resnet_inputs.loaded.module, config, resnet_inputs.calib_batches)
    original = {n: wl.layer.weight.detach().clone() for n, wl in sim.weight_layers.items()}
    grids = {n: wl.grid(original[n], wl.effective_scheme(original[n])) for n, wl in sim.weight_layers.items()}
    result = adaround(sim, resnet_inputs.calib_batches, iters=60)
    for name, wl in sim.weight_layers.items():
        scale = grids[name][0].reshape((-1, 1, 1, 1) if grids[name][0].dim() else ())
        assert wl.pinned, name
        levels = wl.layer.weight.detach() / scale
        torch.testing.assert_close(levels, levels.round(), atol=1e-3, rtol=0)  # on the grid
        assert float((levels.round() - (original[name] / scale).round()).abs().max()) <= 1  # within one step
    layers = result["layers"].values()
    assert sum(r["flipped"] for r in layers) > 0
    assert sum(r["mse"] for r in layers) < sum(r["mse_nearest"] for r in layers)


def test_after_rounding_the_reference_is_still_the_fp32_network(resnet_inputs):
    """AdaRound stores rounded weights in the sim's float weights; the FP32 reference later steps fit to (AdaRound's
    next layers, bias correction) is still the FP32 network, and the rounded weights stay for the quantized run."""
    from qcore.quant.recovery.reference import fp32_reference

    config = QuantConfig().with_default(weight_bits=4, weight_granularity="tensor")
    sim = calibrated_sim(resnet_inputs.loaded.module, config, resnet_inputs.calib_batches)
    x = resnet_inputs.calib_batches[0][:32]
    with sim.disabled():
        fp32 = sim(x)
    before = {n: wl.layer.weight.detach().clone() for n, wl in sim.weight_layers.items()}
    adaround(sim, resnet_inputs.calib_batches, iters=20)
    with fp32_reference(sim):
        reference = sim(x)
    with sim.disabled():
        disabled = sim(x)
    torch.testing.assert_close(reference, fp32)
    torch.testing.assert_close(disabled, fp32)
    assert any(not torch.equal(wl.layer.weight, before[n]) for n, wl in sim.weight_layers.items())  # still rounded


def test_a_layer_kept_in_float_after_recovery_is_the_fp32_layer(resnet_inputs):
    """AdaRound's rounded weights and bias correction's shifted bias belong to the quantized layer: a sweep or a
    partial config that keeps the layer in float runs its FP32 weight and bias, in the sim and in the float graph
    the INT8 backends convert; quantized again, it runs the rounded ones. QAT starts from the weights as run."""
    from qcore.analysis.sensitivity import float_layers
    from qcore.quant.recovery.graph import capture_inputs
    from qcore.runtime.backends.x86 import float_graph

    config = QuantConfig().with_default(weight_bits=4, weight_granularity="tensor")
    xs = resnet_inputs.calib_batches
    sim = calibrated_sim(resnet_inputs.loaded.module, config, xs)
    before = {n: (wl.layer.weight.detach().clone(), wl.layer.bias.detach().clone()) for n, wl in sim.weight_layers.items()}
    adaround(sim, xs, iters=20)
    correct_bias(sim, xs)
    name = list(sim.weight_layers)[1]
    wl = sim.weight_layers[name]
    rounded = (wl.layer.weight.detach().clone(), wl.layer.bias.detach().clone())
    assert not torch.equal(rounded[0], before[name][0]) and not torch.equal(rounded[1], before[name][1])
    x = capture_inputs(sim, [name], [xs[0][:8]])[name]
    sim.configure(float_layers(config, [name]))
    torch.testing.assert_close(wl(x), wl.layer._conv_forward(x, *before[name]))
    copied = float_graph(sim).get_submodule(name)
    torch.testing.assert_close(copied.weight, before[name][0])
    torch.testing.assert_close(copied.bias, before[name][1])
    sim.configure(config)
    torch.testing.assert_close(wl(x), wl.layer._conv_forward(x, wl.quantized_weight(), rounded[1]))
    torch.testing.assert_close(wl.quantized_weight(), rounded[0])  # on the grid: quantizing keeps the rounding
    sim.configure(float_layers(config, [name]))
    sim.keep_current_weights()
    torch.testing.assert_close(wl.layer.weight.detach(), before[name][0])
    assert all(w.original is None for w in sim.weight_layers.values())


def test_a_layers_sqnr_after_adaround_counts_its_weight_rounding(resnet_inputs):
    """Recover's per-layer SQNR column compares with the FP32 network: with 16-bit activations the first layer's
    error is its 4-bit weights' (about 20 dB), not the 16-bit rounding alone it would be against the rounded
    weights in float (over 70 dB)."""
    from qcore.analysis.evaluate import layer_errors

    config = QuantConfig().with_default(weight_bits=4, weight_granularity="tensor", act_bits=16)
    sim = calibrated_sim(resnet_inputs.loaded.module, config, resnet_inputs.calib_batches)
    adaround(sim, resnet_inputs.calib_batches, iters=20)
    first = next(iter(sim.weight_layers))
    assert layer_errors(sim, resnet_inputs.calib_batches[0][:32])[first]["sqnr_db"] < 40


def test_bias_correction_after_adaround_brings_the_means_back_to_the_fp32_network(resnet_inputs):
    from qcore.quant.recovery.reference import fp32_reference

    config = QuantConfig().with_default(weight_bits=4, weight_granularity="tensor")
    sim = calibrated_sim(resnet_inputs.loaded.module, config, resnet_inputs.calib_batches)
    names, xs = list(sim.weight_layers), resnet_inputs.calib_batches
    with sim.disabled():
        reference = _mean_outputs(sim, names, xs)
    adaround(sim, xs, iters=20)
    correct_bias(sim, xs)
    gap = {n: float((m - reference[n]).abs().max()) for n, m in _mean_outputs(sim, names, xs).items()}
    assert max(gap.values()) <= 1e-3, gap
    with fp32_reference(sim):  # and the reference holds the biases from before the correction
        assert max(float((m - reference[n]).abs().max()) for n, m in _mean_outputs(sim, names, xs).items()) <= 1e-4


@pytest.mark.slow
def test_adaround_after_cle_on_entropy_ranges_keeps_the_accuracy_cle_gave():
    """The case that fell to chance (10%) while AdaRound fitted each layer to a target computed through the
    layers it had already rounded: fm_mobilenetv2, 4-bit per-tensor weights, entropy activation ranges."""
    from qcore.analysis.evaluate import scores

    inp = prepare_inputs("fm_mobilenetv2", calib_size=128, eval_size=500)
    config = QuantConfig().with_default(weight_bits=4, weight_granularity="tensor", act_method="entropy")
    top1 = {}
    for steps in ("cle:rounds=1", "cle:rounds=1,adaround:iters=100"):
        sim = calibrated_sim(inp.loaded.module, replace(config, recovery=parse_steps(steps)), inp.calib_batches)
        top1[steps] = scores(logits(sim, inp.eval_batches), inp.labels).top1
    assert top1["cle:rounds=1,adaround:iters=100"] >= top1["cle:rounds=1"] - 0.01, top1


def test_smoothquant_keeps_the_fp32_function_and_shrinks_outlier_channels():
    torch.manual_seed(0)
    vit = BUILTIN["fm_vit"].build().eval()
    with torch.no_grad():
        vit.blocks[0].norm1.weight[3] = 25.0  # an outlier channel, as trained transformers have
    sim = QuantSim(vit)
    x = torch.randn(16, 1, 28, 28)
    with sim.disabled():
        ref = sim(x)
    changes = smooth(sim, [x], alpha=0.5)
    with sim.disabled():
        torch.testing.assert_close(sim(x), ref, rtol=1e-4, atol=1e-4)
    first = changes["pairs"]["blocks.0.norm1"]
    assert first["linears"] == ["blocks.0.attn.qkv"]
    assert max(first["act_max_after"]) < 0.5 * max(first["act_max_before"])


def test_steps_round_trip_through_the_config_json():
    config = QuantConfig(recovery=parse_steps("cle,adaround:iters=200;reg=0.02,smoothquant:alpha=0.7"))
    again = QuantConfig.from_json(config.to_json())
    assert again == config and again.recovery[1].param("iters", 500) == 200
    with pytest.raises(ValueError, match="unknown recovery step"):
        RecoveryStep("magic")


@pytest.mark.slow
@pytest.mark.parametrize("steps", ["cle", "cle,bias_correction", "adaround:iters=40", "gptq", "brecq:iters=30"])
def test_real_int8_matches_the_simulation_after_the_steps(steps, resnet_inputs):
    from qcore.runtime.backends import ort as ort_backend

    inp = resnet_inputs
    sim = calibrated_sim(inp.loaded.module, QuantConfig(recovery=parse_steps(steps)), inp.calib_batches)
    assert [r.name for r in sim.recovery_results] == [s.split(":")[0] for s in steps.split(",")]
    runner = ort_backend.int8_runner(sim, inp.loaded.spec.input_shape, Path(tempfile.mkdtemp()), 2, "u8")
    s, r = logits(sim, inp.eval_batches), logits(runner, inp.eval_batches)
    assert agreement(s.argmax(1), r.argmax(1)) >= 0.99


@pytest.mark.slow
def test_real_int8_of_the_transformer_matches_the_simulation_after_smoothquant():
    from qcore.runtime.backends import ort as ort_backend

    inp = prepare_inputs("fm_vit", calib_size=128, eval_size=300, eval_batch=100)
    config = QuantConfig(recovery=parse_steps("smoothquant:alpha=0.5")).with_default(weight_granularity="tensor")
    sim = calibrated_sim(inp.loaded.module, config, inp.calib_batches)
    assert sim.recovery_results[0].changes["pairs"]  # every LayerNorm -> Linear pair was smoothed
    assert {p.kind for p in sim.points} >= {"norm", "matmul", "linear"}  # LayerNorm outputs and attention quantized
    runner = ort_backend.int8_runner(sim, inp.loaded.spec.input_shape, Path(tempfile.mkdtemp()), 2, "u8")
    s, r = logits(sim, inp.eval_batches), logits(runner, inp.eval_batches)
    assert agreement(s.argmax(1), r.argmax(1)) >= 0.99


def test_adaround_holds_only_the_images_its_capture_budget_allows(resnet_inputs, monkeypatch):
    """AdaRound keeps a layer's inputs and outputs in memory: under a budget of a few images' worth for the first
    layer, it uses fewer images than the calibration set has, and the report says how many each layer used."""
    from qcore.quant.recovery import rounding

    config = QuantConfig().with_default(weight_bits=4)
    sim = calibrated_sim(resnet_inputs.loaded.module, config, resnet_inputs.calib_batches)
    first = next(iter(sim.weight_layers))
    x = rounding.capture_inputs(sim, [first], [resnet_inputs.calib_batches[0][:1]])[first]
    monkeypatch.setattr(rounding, "CAPTURE_BUDGET_BYTES", 10 * 3 * x.numel() * x.element_size())
    layers = rounding.adaround(sim, resnet_inputs.calib_batches, iters=5)["layers"]
    total = sum(len(b) for b in resnet_inputs.calib_batches)
    assert 1 <= layers[first]["images"] < total
    assert all(1 <= row["images"] <= total for row in layers.values())


def test_gptqs_hessian_summed_a_few_images_at_a_time_is_the_whole_batchs(resnet_inputs, monkeypatch):
    """The im2col of a whole batch at 224x224 is hundreds of MB in float64: the Hessian sums it a few images at a
    time, and that sum is the same matrix."""
    from qcore.quant.recovery import rounding

    sim = calibrated_sim(resnet_inputs.loaded.module, QuantConfig().with_default(weight_bits=4),
                         resnet_inputs.calib_batches)
    name = list(sim.weight_layers)[1]
    whole = rounding._hessian(sim, name, resnet_inputs.calib_batches[:1])
    cols_per_image = rounding._columns(sim.weight_layers[name].layer,
                                       rounding.capture_inputs(sim, [name], [resnet_inputs.calib_batches[0][:1]])[name])
    monkeypatch.setattr(rounding, "IM2COL_BYTES", 3 * cols_per_image.numel() * 8)  # three images per part
    parts = rounding._hessian(sim, name, resnet_inputs.calib_batches[:1])
    torch.testing.assert_close(parts, whole)
