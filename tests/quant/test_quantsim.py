import copy

import pytest
import torch

from torch import nn

from qcore.zoo.builtin_nets import FMGeluNet, FMMobileNetV2, FMResNet
from qcore.analysis.evaluate import layer_errors, sqnr_db
from qcore.quant.fold import fold_conv_bn
from qcore.quant.qconfig import LayerConfig, QuantConfig
from qcore.quant.quantsim import QuantSim, TraceError
from tests.helpers import randomized


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return randomized(FMResNet((8, 16, 32), (1, 1, 1)))


def inputs(n=32, seed=0):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_fold_conv_bn_is_exact():
    conv, bn = nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4)
    randomized(nn.Sequential(conv, bn))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = bn(conv(x))
        fold_conv_bn(conv, bn)
        assert torch.allclose(conv(x), ref, atol=1e-5)


def test_never_mutates_the_given_model(resnet):
    before = copy.deepcopy(resnet.state_dict())
    sim = QuantSim(resnet, QuantConfig())
    sim.collect_stats([inputs()])
    sim.apply_ranges("mse")
    sim(inputs())
    after = resnet.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in resnet.modules())


@pytest.mark.parametrize("net", [FMResNet, FMMobileNetV2, FMGeluNet])
def test_disabled_sim_equals_fp32(net):
    torch.manual_seed(1)
    model = randomized(net())
    sim = QuantSim(model)
    x = inputs()
    with torch.no_grad(), sim.disabled():
        assert torch.allclose(sim(x), model(x), atol=1e-4)
    assert sim.folded_bn, "BN layers should have been folded"


def test_quantizer_placement(resnet):
    sim = QuantSim(resnet)
    kinds = [p.kind for p in sim.points]
    assert kinds[0] == "input"
    assert kinds.count("conv") == sum(isinstance(m, nn.Conv2d) for m in resnet.modules())
    assert kinds.count("linear") == 1 and kinds.count("add") == 3
    # conv + ReLU is one point: quantized after the ReLU, so its range is non-negative
    sim.collect_stats([inputs()])
    assert sim.stats["stem.0"].min >= 0.0
    assert sim.stats["layers.0.conv2"].min < 0.0  # conv2 feeds the add, no ReLU in between


def test_gelu_outputs_get_their_own_quantizer():
    sim = QuantSim(randomized(FMGeluNet((8, 16, 16))))
    acts = [p for p in sim.points if p.kind == "act"]
    assert acts and all(p.module_type == "GELU" for p in acts)


def test_w8a8_is_close_and_w2a2_is_not(resnet):
    x = inputs(64)
    with torch.no_grad():
        ref = resnet(x)
    sim8 = QuantSim(resnet, QuantConfig())
    sim8.collect_stats([x])
    sim8.apply_ranges()
    sim2 = QuantSim(resnet, QuantConfig().with_default(weight_bits=2, act_bits=2))
    sim2.collect_stats([x])
    sim2.apply_ranges()
    with torch.no_grad():
        s8, s2 = sqnr_db(ref, sim8(x)), sqnr_db(ref, sim2(x))
    assert s8 > 25 and s2 < 10


def test_per_layer_float_override_changes_only_that_layer(resnet):
    x = inputs()
    cfg = QuantConfig().with_default(weight_bits=2, act_bits=2).with_layer("stem.0", enabled=False)
    sim = QuantSim(resnet, cfg)
    sim.collect_stats([x])
    sim.apply_ranges()
    assert sim.quantizer("stem.0").mode == "float"
    assert not sim.weight_layers["stem.0"].enabled
    assert sim.quantizer("layers.0.conv1").mode == "quant"
    errors = layer_errors(sim, x)
    assert errors["input"]["sqnr_db"] < 20  # 2-bit input
    assert set(errors) == set(sim.layer_names())


def test_layer_errors_in_one_image_chunks_are_the_errors_of_the_whole_batch(resnet):
    """Under a capture budget of one byte every image goes alone; the sums make the same SQNR, MSE, cosine
    as the errors of the whole batch at once (output_errors), to the last bits a convolution's result depends
    on the batch size by."""
    from qcore.analysis.evaluate import output_errors

    x = inputs()
    sim = QuantSim(resnet, QuantConfig().with_default(weight_bits=4, act_bits=4))
    sim.collect_stats([x])
    sim.apply_ranges()
    chunked = layer_errors(sim, x, budget_bytes=1)
    with torch.no_grad(), sim.disabled(), sim.capture() as ref:
        sim(x)
    with torch.no_grad(), sim.capture() as out:
        sim(x)
    whole = {name: output_errors(r, o) for (name, _, r), (_, _, o) in zip(ref, out)}
    assert set(chunked) == set(whole) and len(x) > 1
    for name, e in whole.items():
        for key in ("sqnr_db", "mse", "cosine"):
            assert chunked[name][key] == pytest.approx(e[key], rel=1e-6, abs=1e-12), (name, key)


def test_ranges_reapply_without_another_pass(resnet):
    sim = QuantSim(resnet)
    stats = sim.collect_stats([inputs()])
    r_max = sim.apply_ranges("max")
    r_pct = sim.apply_ranges("percentile:99")
    assert sim.stats is stats
    name = "layers.0.conv2"
    assert r_pct[name].clip_max < r_max[name].clip_max


def test_apply_before_stats_is_refused(resnet):
    with pytest.raises(RuntimeError, match="collect_stats"):
        QuantSim(resnet).apply_ranges()


def test_zero_calibration_images_are_refused(resnet):
    with pytest.raises(ValueError, match="at least one image"):
        QuantSim(resnet).collect_stats([])


def test_group_and_float_formats(resnet):
    x = inputs()
    for cfg in (
        QuantConfig().with_default(weight_granularity="group", weight_group_size=8, weight_bits=4),
        QuantConfig().with_default(weight_dtype="fp16", act_dtype="bf16"),
        QuantConfig().with_default(weight_granularity="tensor", weight_symmetric=False),
    ):
        sim = QuantSim(resnet, cfg)
        sim.collect_stats([x])
        sim.apply_ranges()
        with torch.no_grad():
            assert sqnr_db(resnet(x), sim(x)) > 15


def test_group_size_must_divide_channels(resnet):
    sim = QuantSim(resnet, QuantConfig().with_default(weight_granularity="group", weight_group_size=3))
    with pytest.raises(ValueError, match="groups of 3"):
        sim(inputs())


def test_config_json_round_trip():
    cfg = (QuantConfig(reduce_range=True)
           .with_default(act_method="entropy", weight_bits=4)
           .with_layer("fc", weight_dtype="fp16", act_dtype="fp32")
           .with_layer("stem.0", enabled=False))
    back = QuantConfig.from_json(cfg.to_json())
    assert back == cfg
    assert back.for_layer("fc").weight_dtype == "fp16" and back.for_layer("other") == cfg.default


def test_config_validation():
    with pytest.raises(ValueError):
        LayerConfig(weight_bits=9)
    with pytest.raises(ValueError):
        LayerConfig(act_method="magic")
    with pytest.raises(ValueError, match="unknown layer config keys"):
        QuantConfig.from_dict({"default": {"bitz": 8}})


def test_untraceable_model_gives_a_clear_error():
    class Dynamic(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(TraceError, match="cannot be traced"):
        QuantSim(Dynamic())


def test_unsupported_layers_are_listed_and_left_float():
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6, 3)).eval()
    sim = QuantSim(model)
    assert sim.unsupported == ["0 (Conv1d)"]
    sim.collect_stats([torch.randn(4, 1, 8)])
    sim.apply_ranges()
    assert sim(torch.randn(4, 1, 8)).shape == (4, 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
                                  "shufflenet_v2_x1_0", "regnet_x_400mf", "resnet50"])
def test_torchvision_models_simulate(name):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(2, 3, 224, 224)
    sim = QuantSim(model)
    with torch.no_grad(), sim.disabled():
        assert torch.allclose(sim(x), model(x), atol=1e-3, rtol=1e-3)
    sim.collect_stats([x])
    sim.apply_ranges()
    with torch.no_grad():
        assert torch.isfinite(sim(x)).all()


def test_clipped_activations_are_quantized_after_the_clamp():
    from qcore.analysis.experiments import clip_activations
    from qcore.zoo.models import finish_loading, get_spec

    spec = get_spec("fm_gelunet")
    torch.manual_seed(0)
    loaded = finish_loading(spec, randomized(spec.build()))
    clipped = clip_activations(loaded, 0.5)
    sim = QuantSim(clipped.module)
    stats = sim.collect_stats([inputs(16)])
    acts = [p.name for p in sim.points if p.kind == "act"]
    assert acts and all(stats[a].max <= 0.5 + 1e-6 for a in acts)
    assert not any(isinstance(m, nn.Hardtanh) for m in loaded.module.modules())  # the original is untouched
    with pytest.raises(ValueError, match="no GELU"):
        clip_activations(finish_loading(get_spec("fm_resnet"), get_spec("fm_resnet").build()), 10)


def test_sixteen_bit_activations_are_nearly_lossless(resnet):
    x = inputs()
    sim = QuantSim(resnet, QuantConfig().with_default(act_bits=16))
    sim.collect_stats([x])
    sim.apply_ranges()
    with torch.no_grad():
        assert sqnr_db(resnet(x), sim(x)) > 40
    assert sim.quantizer("input").scheme.qmax == 65535
