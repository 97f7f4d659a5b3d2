"""QAT: the recipe, range modes, streaming, cancel, and a real improvement on a hard config."""

from __future__ import annotations

import time

import pytest
import torch

from qcore.run.jobs import Job
from qcore.train.qat import QATEpochRow, QATStepRow, QATRecipe, default_lr, run_qat
from qcore.quant.qconfig import QuantConfig
from qcore.quant.build import calibrated_sim
from tests.helpers import tiny_fashion_model

FAST = dict(epochs=2, batch_size=16, int8_each_epoch=False, latency_iters=3, log_every=1)


def _run(tmp_path, recipe, config=None, **kw):
    """The report and the fine-tuned sim of a small run on the tiny model."""
    return run_qat(tiny_fashion_model(), config or QuantConfig(), recipe, calib_size=16, eval_size=20,
                   final_eval_size=20, out_dir=tmp_path / "qat", **kw)


@pytest.mark.parametrize("bad", [dict(steps=None, minutes=None), dict(steps=0, minutes=None), dict(range_mode="magic"),
                                 dict(epochs=0), dict(lr=5.0), dict(freeze_after=-1)])
def test_recipe_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        QATRecipe(**bad)


def test_default_lr_is_one_percent_of_the_recorded_rate():
    model = tiny_fashion_model()
    assert default_lr(model) == pytest.approx(1e-5)  # nothing recorded
    object.__setattr__(model, "info", {"lr": 3e-3})
    assert default_lr(model) == pytest.approx(3e-5)


def test_run_streams_metrics_keeps_model_and_never_touches_the_shared_one(tiny_fashion_mnist, tmp_path):
    model = tiny_fashion_model()
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    rows = []
    report, sim = run_qat(model, QuantConfig(), QATRecipe(steps=6, minutes=None, **FAST), calib_size=16, eval_size=20,
                          final_eval_size=20, out_dir=tmp_path / "qat", on_metric=rows.append)
    assert [r.epoch for r in rows if isinstance(r, QATEpochRow)] == [0, 1, 2]
    assert [r.step for r in rows if isinstance(r, QATStepRow)] == [1, 2, 3, 4, 5, 6]
    assert report.history == [r for r in rows if isinstance(r, QATEpochRow)]  # the report keeps the rows streamed
    lrs = [r.lr for r in rows if isinstance(r, QATStepRow)]
    assert lrs[0] == pytest.approx(1e-5) and all(a > b for a, b in zip(lrs, lrs[1:]))  # cosine decay
    for key in ("fp32_accuracy", "ptq_accuracy", "qat_accuracy", "int8_accuracy"):  # counts over the 20 final images
        assert getattr(report, key) * 20 == pytest.approx(round(getattr(report, key) * 20)), key
    times = report.step_times  # the ratio reported is the one of the two timings reported
    assert report.steps == 6 and report.step_overhead_vs_fp32 == pytest.approx(
        times["qat_step_s"] / times["fp32_step_s"], rel=0.02)
    assert (tmp_path / "qat" / "qat_int8.onnx").is_file()
    trained = sim.weight_layers["0"].layer.weight
    assert not torch.equal(trained, before["0.weight"])  # BN-folded and fine-tuned: a copy
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(p.requires_grad for p in model.module.parameters())


def test_a_training_set_smaller_than_a_batch_still_trains(tiny_fashion_mnist, tmp_path):
    report, _ = _run(tmp_path, QATRecipe(steps=3, minutes=None, **{**FAST, "batch_size": 500}))
    assert report.steps == 3 and len(report.losses) == 3


def test_minutes_budget_turns_into_steps():
    """The budget less one evaluation round per epoch, divided by the measured step time."""
    recipe = QATRecipe(minutes=1.0, epochs=2)
    assert recipe.total_steps(step_s=0.5, round_s=5.0) == int((60 - 2 * 5.0) / 0.5)  # 100
    assert recipe.total_steps(step_s=10.0, round_s=25.0) == 2  # nothing fits: at least one step per epoch
    assert QATRecipe(steps=7, minutes=None).total_steps(step_s=0.5, round_s=5.0) == 7
    assert recipe.epoch_bounds(100) == [50, 100] and QATRecipe(minutes=1.0, epochs=3).epoch_bounds(2) == [1, 2]


def test_learned_ranges_train_and_deploy(tiny_fashion_mnist, tmp_path):
    config = QuantConfig().with_default(act_bits=8)
    report, sim = _run(tmp_path, QATRecipe(steps=8, minutes=None, range_mode="learn", lr=1e-2, **FAST), config)
    quantizers = [q for q in sim.quantizers.values() if q.mode == "quant"]
    assert all(q.learned_scale is None and q.range.method == "qat-learn" for q in quantizers)
    first = quantizers[0]
    # the range written back is the trained grid, and exports use it
    assert first.range.scale == pytest.approx(float(first.scale))
    assert first.range.clip_max == pytest.approx((first.scheme.qmax - first.range.zero_point) * first.range.scale)
    assert report.int8_accuracy is not None


def test_learned_scales_get_gradients(tiny_fashion_mnist, tmp_path):
    """A too-narrow range must widen under LSQ when clipping hurts the loss."""
    model = tiny_fashion_model()
    sim = calibrated_sim(model.module, QuantConfig(), [torch.randn(8, 1, 28, 28)])
    scales = [q.learn_range() for q in sim.int_quantizers()]
    assert scales and all(s.requires_grad for s in scales)
    sim.train()
    sim(torch.randn(4, 1, 28, 28)).square().sum().backward()
    assert any(s.grad is not None and s.grad.abs().sum() > 0 for s in scales)


def test_observers_follow_the_data_then_freeze(tiny_fashion_mnist, tmp_path):
    model = tiny_fashion_model()
    sim = calibrated_sim(model.module, QuantConfig(), [torch.randn(8, 1, 28, 28)])
    q = sim.quantizer("input")
    before = float(q.scale)
    for quantizer in sim.int_quantizers():
        quantizer.observe_ranges()
    sim.train()
    sim(torch.randn(4, 1, 28, 28) * 50)  # much wider inputs: the range must grow
    grown = float(q.scale)
    assert grown > before
    for quantizer in sim.int_quantizers():
        quantizer.stop_observing()
    sim(torch.randn(4, 1, 28, 28) * 500)
    assert float(q.scale) == grown  # frozen


def test_four_bit_activations_train_in_simulation_and_say_why_no_int8(tiny_fashion_mnist, tmp_path):
    config = QuantConfig().with_default(weight_bits=4, act_bits=4)
    report, _ = _run(tmp_path, QATRecipe(steps=2, minutes=None, **FAST), config)
    assert report.int8_accuracy is None and report.qat_accuracy is not None
    assert any("4-bit activations" in n for n in report.notes)


def test_job_streams_while_running_and_cancels_within_two_seconds(tiny_fashion_mnist, tmp_path):
    recipe = QATRecipe(steps=100_000, minutes=None, **FAST)

    def work(job):
        return _run(tmp_path, recipe, progress=job.update, on_metric=job.emit)

    job = Job("qat", work).start()
    deadline = time.time() + 60
    while time.time() < deadline and not any(m.kind == "step" for m in job.snapshot()["metrics"]):
        time.sleep(0.05)
    snap = job.snapshot()
    assert snap["status"] == "running" and any(m.kind == "epoch" for m in snap["metrics"])
    asked = time.time()
    job.cancel()
    final = job.wait(10)
    assert final["status"] == "cancelled"
    assert time.time() - asked < 2.0
    assert final["metrics"]  # what was measured before the cancel is kept


@pytest.mark.slow
def test_qat_recovers_a_hard_config_on_a_trained_model(tmp_path):
    """W2A4 collapses the built-in ResNet under PTQ (~38% vs 92% here); 30 QAT steps win much of it back (~78%)."""
    config = QuantConfig().with_default(weight_bits=2, act_bits=4)
    report, _ = run_qat("fm_resnet", config, QATRecipe(steps=30, minutes=None, epochs=1, int8_each_epoch=False),
                        calib_size=256, eval_size=1000, final_eval_size=1000, out_dir=tmp_path / "qat")
    assert report.ptq_accuracy < report.fp32_accuracy - 0.2
    assert report.qat_accuracy > report.ptq_accuracy + 0.15


def test_trained_bn_starts_as_the_folded_layer_and_folds_back():
    from qcore.quant.fold import unfold_conv_bn
    from qcore.train.qat.bn import TrainedBN, attach_trained_bn, fold_trained_bn

    model = tiny_fashion_model()
    sim = calibrated_sim(model.module, QuantConfig(), [torch.randn(8, 1, 28, 28)])
    wl = sim.weight_layers["0"]
    folded_w, folded_b = wl.layer.weight.clone(), wl.layer.bias.clone()
    w, b = unfold_conv_bn(folded_w, folded_b, sim.bn_of["0"])
    assert torch.allclose(w, model.module[0].weight, atol=1e-5) and torch.allclose(b, model.module[0].bias, atol=1e-5)
    assert attach_trained_bn(sim) == 1
    wrapper = sim.wrapper_of("0")
    assert isinstance(wrapper, TrainedBN) and wrapper.wl is wl
    x = torch.randn(4, 1, 28, 28)
    sim.train()
    wrapper.bn.eval()  # with running statistics it is exactly the folded, quantized conv
    with torch.no_grad():
        trained = wrapper(x)
        wrapper.bn.train()
        wrapper(x * 3 + 1)  # batch statistics move the running ones
    fold_trained_bn(sim, detach=False)
    assert not torch.equal(wl.layer.weight, folded_w) or not torch.equal(wl.layer.bias, folded_b)
    with torch.no_grad():
        wl.layer.weight.copy_(folded_w)
        wl.layer.bias.copy_(folded_b)
        sim.weights_changed()
        assert torch.allclose(trained, wl(x), atol=1e-5)


def test_bn_statistics_train_then_freeze(tiny_fashion_mnist, tmp_path):
    report, sim = _run(tmp_path, QATRecipe(steps=6, minutes=None, bn_freeze_after=3, **FAST))
    assert "BN statistics trained for 3 steps, then folded and frozen" in report.notes
    assert all(sim.wrapper_of(name) is wl for name, wl in sim.weight_layers.items())
    assert report.int8_accuracy is not None
