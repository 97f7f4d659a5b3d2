"""The guided workflow: the target check, the QAT recipe, and whole runs that stop where they should."""

from __future__ import annotations

import pytest

from qcore.i18n import translate
from qcore.quant.qconfig import QuantConfig
from qcore.workflow import Target, WorkflowOptions, run_workflow
from qcore.workflow.document import to_html, to_markdown
from qcore.workflow.steps import qat_recipe
from tests.helpers import tiny_fashion_model


def test_target_judges_measured_numbers():
    both = Target(max_drop=0.01, min_speedup=2.0)
    assert both.judge(0.915, 0.92, 2.5).met
    assert not both.judge(0.905, 0.92, 2.5).met and both.judge(0.905, 0.92, 2.5).accuracy_ok is False
    slow = both.judge(0.92, 0.92, 1.5)
    assert not slow.met and slow.accuracy_ok and slow.speed_ok is False
    assert not both.judge(0.92, 0.92, None).met  # a speed bound with no speed measured does not hold
    acc_only = Target(max_drop=0.0).judge(0.93, 0.92, None)
    assert acc_only.met and acc_only.speed_ok is None and acc_only.drop == pytest.approx(-0.01)
    with pytest.raises(ValueError, match="both"):
        Target(max_drop=None, min_speedup=None)
    with pytest.raises(ValueError):
        Target(max_drop=1.5)


def test_qat_recipe_is_a_share_of_the_original_schedule():
    recipe, (why, params) = qat_recipe({"steps": 2814, "epochs": 6, "batch": 128, "lr": 0.003}, 60000, 0.10)
    assert recipe.steps == 281 and recipe.batch_size == 128 and recipe.lr is None  # None: 1% of the original LR
    assert "2814" in why.format(**params) and "10%" in why.format(**params)
    recipe, (why, params) = qat_recipe({}, 60000, 0.05)  # nothing recorded: 5% of one epoch at batch 64
    assert recipe.steps == round(0.05 * 60000 / 64) and "not recorded" in why
    with pytest.raises(ValueError, match="10%"):
        qat_recipe({"steps": 100}, 1000, 0.2)


def test_an_easy_target_stops_at_the_ptq_baseline_and_deploys_it(tmp_path):
    report = run_workflow(tiny_fashion_model(), Target(max_drop=0.5), calib_size=64, eval_size=200,
                          out_dir=tmp_path)
    ptq, recover, partial, qat = report.steps
    assert report.met_by == "ptq" and ptq.ran and ptq.met
    assert [m.method for m in ptq.detail.methods] == ["max", "entropy", "percentile:99.99", "percentile:99.999"]
    assert ptq.accuracy == max(m.accuracy for m in ptq.detail.methods)
    assert (recover.ran, recover.skipped, partial.ran, partial.skipped, qat.ran) == (False, "met", False, "met", False)
    final = report.final
    assert final.source == "ptq" and final.accuracy is not None and final.speedup > 0
    assert any(f.endswith(".onnx") for f in final.files)
    md = to_markdown(report)
    assert "The target is met by step 1. PTQ baseline." in md and md.count("\n| ") >= 6


def test_an_unreachable_speed_target_ends_the_walk_with_the_reason(tmp_path):
    report = run_workflow(tiny_fashion_model(), Target(max_drop=None, min_speedup=100.0), calib_size=64,
                          eval_size=100, out_dir=tmp_path)
    assert report.met_by is None and not report.steps[0].verdict.speed_ok
    assert [s.skipped for s in report.steps[1:]] == ["speed", "speed", "speed"]
    korean = to_markdown(report, lambda m: translate(m, "ko"))
    assert "속도 목표에 도달할 수 없습니다" in korean and "the speed target" not in korean


@pytest.mark.slow
def test_a_hard_target_walks_to_qat_and_reports_it(tmp_path):
    config = QuantConfig().with_default(weight_bits=2, weight_granularity="tensor", act_bits=8)
    options = WorkflowOptions(max_float=1, qat_fraction=0.002, allow_recovery=False)
    report = run_workflow("fm_resnet", Target(max_drop=0.0), config, options, calib_size=128, eval_size=300,
                          out_dir=tmp_path)
    ptq, recover, partial, qat = report.steps
    assert (recover.ran, recover.skipped) == (False, "recovery_off")
    assert ptq.ran and partial.ran and qat.ran  # each step ran because the one before missed the target
    assert not ptq.met and not partial.met and len(partial.float_layers) == 1
    assert partial.accuracy >= ptq.accuracy  # the most sensitive layer in float helps
    assert qat.float_layers == partial.float_layers  # step 4 starts from step 3's configuration
    assert qat.detail.recipe["steps"] == round(0.002 * 2814) and qat.detail.recipe["batch_size"] == 128
    assert qat.detail.ptq_accuracy == pytest.approx(partial.accuracy, abs=0.05)  # QAT's own PTQ start
    assert report.final.source == "qat" and report.final.simulation_accuracy == qat.accuracy
    assert report.final.accuracy is not None and any(f.endswith("qat_int8.onnx") for f in report.final.files)
    html = to_html(report, figures=[])
    assert "<table>" in html and "4. Quantization-aware training (QAT)" in html


def test_activation_bits_without_an_int8_kernel_are_simulated_and_said(tmp_path):
    config = QuantConfig().with_default(act_bits=4)
    report = run_workflow(tiny_fashion_model(), Target(max_drop=0.9), config, calib_size=64, eval_size=100,
                          out_dir=tmp_path)
    assert report.met_by == "ptq" and report.steps[0].speedup is None and report.final is None
    assert any("4-bit activations have no INT8 kernel" in n for n in report.notes)
    assert "Real INT8" not in to_markdown(report)


@pytest.mark.slow
def test_four_bit_per_tensor_mobilenet_meets_the_target_by_recovery_without_float_layers(tmp_path):
    """The issue's case: W4 per-tensor weights lose ~40 points with plain PTQ; the recovery step finds a combination
    within 1 point of FP32, so no layer stays float and no training runs; the final INT8 model carries it."""
    config = QuantConfig().with_default(weight_bits=4, weight_granularity="tensor")
    report = run_workflow("fm_mobilenetv2", Target(max_drop=0.01), config, WorkflowOptions(allow_qat=False),
                          calib_size=512, eval_size=1000, out_dir=tmp_path)
    ptq, recover, partial, qat = report.steps
    assert not ptq.met and recover.ran and recover.met and report.met_by == "recover"
    d = recover.detail
    assert d.baseline_accuracy == ptq.accuracy and recover.accuracy > ptq.accuracy + 0.2
    assert d.tried[0].steps == ["cle"] and [t for t in d.tried if t.kept][-1].steps == d.kept
    assert recover.accuracy == max(t.accuracy for t in d.tried)  # the best measured combination is kept
    assert d.kept[0] == "cle" and recover.config["recovery"][0]["name"] == "cle"
    assert (partial.ran, partial.skipped, qat.skipped) == (False, "met", "met") and not partial.float_layers
    final = report.final
    assert final.source == "recover" and final.accuracy is not None
    assert abs(final.accuracy - recover.accuracy) < 0.01  # real INT8 of the recovered weights, not plain PTQ's
    md = to_markdown(report)
    assert "2. Recover accuracy" in md and "Kept cle" in md


def test_the_recovery_search_tries_brecq_in_place_of_the_rounding_it_kept_when_the_target_is_still_missed():
    from qcore.analysis.sensitivity import prepare
    from qcore.quant.qconfig import RecoveryStep
    from qcore.workflow.recovery_step import _with_step, fitting_steps

    config = QuantConfig().with_default(weight_bits=4, weight_granularity="tensor")
    p = prepare("fm_resnet", config, calib_size=16, eval_size=50)
    assert fitting_steps(p, config) == [["cle"], ["adaround", "gptq"], ["brecq"], ["bias_correction"]]
    eight_bits = QuantConfig()
    assert ["brecq"] not in fitting_steps(prepare("fm_resnet", eight_bits, calib_size=16, eval_size=50), eight_bits)
    kept = [RecoveryStep("cle"), RecoveryStep("adaround")]
    assert [s.name for s in _with_step(kept, "brecq")] == ["cle", "brecq"]
    assert [s.name for s in _with_step(kept, "bias_correction")] == ["cle", "adaround", "bias_correction"]
