import json

import pytest
import torch
from torch import nn

from qcore.zoo.models import ModelSpec, finish_loading, get_spec
from qcore.quant.qconfig import QuantConfig
from qcore.analysis.sensitivity import evaluate_config, float_layers, greedy_fallback, prepare, sweep


def damaged_model(outlier: bool = True):
    """A small trained-free net whose conv 'bad' gets a weight outlier: per-tensor quantization
    then flattens every other weight of that layer to zero (without `outlier`: the same net intact)."""
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("c1", nn.Conv2d(1, 8, 3, padding=1))
    net.add_module("r1", nn.ReLU())
    net.add_module("bad", nn.Conv2d(8, 8, 3, padding=1))
    net.add_module("r2", nn.ReLU())
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(8, 10))
    with torch.no_grad():
        if outlier:
            net.bad.weight[0, 0, 0, 0] = 200.0
    base = get_spec("fm_resnet")
    spec = ModelSpec("damaged", "user", "test", (1, 28, 28), base.preprocess, base.class_names, "fashion-mnist",
                     "test", lambda: net)
    return finish_loading(spec, net.eval())


@pytest.fixture
def prepared(tiny_fashion_mnist):
    config = QuantConfig().with_default(weight_granularity="tensor", weight_bits=4)
    return prepare(damaged_model(), config, calib_size=40, eval_size=20)


def test_sweep_covers_every_layer_with_both_signals(prepared):
    report = sweep(prepared)
    rows = {r.name: r for r in report.layers}
    assert set(rows) == set(prepared.sim.layer_names())
    for r in report.layers:
        assert 0.0 <= r.only_this_quantized <= 1.0 and 0.0 <= r.all_but_this <= 1.0
        assert -1.0 <= r.cosine <= 1.0 + 1e-9 and r.mse >= 0
    intact = {r.name: r for r in sweep(prepare(damaged_model(outlier=False), prepared.base_config, calib_size=40,
                                               eval_size=20)).layers}
    # the outlier ruins that layer's grid: its output error grows by orders of magnitude (SQNR hides it,
    # since the outlier also dominates the signal); the layer before it is untouched
    assert rows["bad"].mse > 100 * intact["bad"].mse
    assert rows["c1"].mse == pytest.approx(intact["c1"].mse)


@pytest.mark.slow
def test_sweep_finds_a_layer_ruined_by_weight_outliers():
    """Scale one channel of a trained layer by 1000 and undo it in the next layer: FP32 is unchanged,
    but per-tensor weights of that layer lose every other channel. The sweep must single it out."""
    import copy

    from qcore.zoo.models import load_model

    loaded = load_model("fm_resnet")
    module = copy.deepcopy(loaded.module)
    block = module.layers[2]  # conv1 -> bn1 -> relu -> conv2
    with torch.no_grad():
        block.bn1.weight[0] *= 1000
        block.bn1.bias[0] *= 1000
        block.conv2.weight[:, 0] /= 1000
    damaged = finish_loading(loaded.spec, module)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(damaged.module(x), loaded.module(x), atol=1e-3)
    config = QuantConfig().with_default(weight_granularity="tensor")
    p = prepare(damaged, config, calib_size=128, eval_size=300)
    report = sweep(p)
    worst = min(report.layers, key=lambda r: r.only_this_quantized)
    assert worst.name == "layers.2.conv1", worst
    assert worst.only_this_quantized < p.fp32_accuracy - 0.05
    greedy = greedy_fallback(p, report, budget=0.01)
    assert greedy.met and greedy.float_layers[0] == "layers.2.conv1"


def test_evaluations_are_independent_and_repeatable(prepared):
    cfg = float_layers(prepared.base_config, ["bad"])
    a = evaluate_config(prepared, cfg)
    evaluate_config(prepared, prepared.base_config)
    assert evaluate_config(prepared, cfg) == a
    all_float = float_layers(prepared.base_config, prepared.sim.layer_names())
    assert evaluate_config(prepared, all_float)["agreement"] == 1.0  # nothing quantized = FP32


def test_greedy_meets_its_budget(prepared):
    report = sweep(prepared)
    greedy = greedy_fallback(prepared, report, budget=0.0)
    assert greedy.met
    assert greedy.curve[-1].accuracy >= prepared.fp32_accuracy
    assert [len(p.float_layers) for p in greedy.curve] == list(range(len(greedy.curve)))
    back = QuantConfig.from_dict(json.loads(json.dumps(greedy.config)))
    assert all(not back.for_layer(n).enabled for n in greedy.float_layers)


@pytest.mark.slow
def test_cli_writes_the_contract(tmp_path):
    from qcore.cli import main

    out = tmp_path / "s.json"
    assert main(["sensitivity", "--model", "fm_gelunet", "--eval-size", "200", "--calib-size", "64",
                 "--max-layers", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"identity", "inventory", "base_accuracy", "fp32_accuracy", "layers", "seconds"} <= set(report)
    assert report["identity"]["model"] == "fm_gelunet" and len(report["inventory"]["quantized_layers"]) > 2
    assert len(report["layers"]) == 2  # --max-layers: the first two in graph order, the inventory lists them all
    assert {"name", "only_this_quantized", "all_but_this", "sqnr_db"} <= set(report["layers"][0])


def test_reusing_the_prefix_gives_the_same_sweep(tiny_fashion_mnist):
    from tests.helpers import tiny_fashion_model

    p = prepare(tiny_fashion_model(), QuantConfig().with_default(weight_bits=3, act_bits=3), calib_size=40, eval_size=20)
    fast, slow = sweep(p, reuse_prefix=True), sweep(p, reuse_prefix=False)
    for a, b in zip(fast.layers, slow.layers):
        assert a == b


def test_a_small_prefix_budget_splits_the_sweep_into_more_items_with_the_same_numbers(tiny_fashion_mnist, monkeypatch):
    """The sweep's items keep every graph value of their batch; under a budget that holds three images per
    item (an ImageNet model's case at scale) the 20 images become 7 items per side, and every number is the
    same as with one item per side."""
    from qcore.analysis import sensitivity
    from tests.helpers import tiny_fashion_model

    model, config = tiny_fashion_model(), QuantConfig().with_default(weight_bits=3, act_bits=3)
    whole = prepare(model, config, calib_size=40, eval_size=20)
    assert len(whole.xs) == 1
    per_image = sensitivity._PrefixCache(whole.sim, whole.xs.head(1)).nbytes()
    monkeypatch.setattr(sensitivity, "PREFIX_BUDGET_BYTES", 3 * per_image)
    split = prepare(model, config, calib_size=40, eval_size=20)
    assert split.xs.batch_size == 3 and len(split.xs) == 7
    for a, b in zip(sweep(whole).layers, sweep(split).layers):
        assert (a.name, a.only_this_quantized, a.all_but_this) == (b.name, b.only_this_quantized, b.all_but_this)


def test_a_sweep_of_chosen_layers_gives_their_numbers_from_the_full_sweep(tiny_fashion_mnist):
    """Each chosen layer is still measured against all the others (quantized, or float): the same numbers as in
    the full sweep, in graph order; a name the model lacks is refused, not silently left out."""
    from qcore.analysis.sensitivity import swept_layers
    from tests.helpers import tiny_fashion_model

    p = prepare(tiny_fashion_model(), QuantConfig().with_default(weight_bits=3, act_bits=3), calib_size=40, eval_size=20)
    names = p.sim.layer_names()
    full = {r.name: r for r in sweep(p).layers}
    part = sweep(p, layers=[names[-1], names[0]])
    assert [r.name for r in part.layers] == [names[0], names[-1]]
    assert all(r == full[r.name] for r in part.layers)
    assert part.base_accuracy == sweep(p, layers=names[:1]).base_accuracy
    assert swept_layers(p, first=2) == names[:2] and swept_layers(p) == names
    with pytest.raises(ValueError, match="no quantizable layer named nope"):
        swept_layers(p, ["nope"])
