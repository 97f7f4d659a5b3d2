"""The Learn page's topics: each verdict flips when the measured numbers say so, and the measurements
behave on tiny real models."""

import math

import pytest
import torch
from torch import nn

from qcore.analysis import learn_topics as lt
from qcore.quant.quantsim import QuantSim
from tests.helpers import randomized


def _dyn(share, fp32, dyn, static):
    return lt.DynamicStaticReport("m", 10, 2, 1, {"fp32": 0.9, "dynamic_int8": 0.9, "static_int8": 0.9},
                                  {"fp32": fp32, "dynamic_int8": dyn, "static_int8": static}, [], [], 3, share, "x86")


def test_dynamic_verdict_follows_the_measured_latency():
    assert lt.dynamic_verdict(_dyn(0.01, 2.0, 2.1, 0.5)) == lt.Verdict(True, "conv_static_faster")
    assert lt.dynamic_verdict(_dyn(0.01, 2.0, 2.1, 2.05)) == lt.Verdict(False, "conv_static_not_faster")  # within 5%
    assert lt.dynamic_verdict(_dyn(0.9, 2.0, 1.0, 0.8)) == lt.Verdict(True, "linear_dynamic_faster")
    assert lt.dynamic_verdict(_dyn(0.9, 2.0, 1.95, 0.8)).holds is False


def test_linear_mac_share_counts_conv_and_linear_work():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 28 * 28, 10))
    conv, lin = 2 * 28 * 28 * 9, 10 * 2 * 28 * 28
    assert lt.linear_mac_share(net, (1, 28, 28)) == pytest.approx(lin / (conv + lin))
    dw = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Flatten(), nn.Linear(4 * 4 * 4, 1))
    assert lt.linear_mac_share(dw, (4, 4, 4)) == pytest.approx(64 / (64 + 4 * 16 * 9))


def _lowbit(per_channel, group, nf4, fp4):
    rows = [{"format": f, "sqnr_db": v} for f, v in
            (("INT4 per-channel", per_channel), ("INT4 per-group", group), ("NF4", nf4), ("FP4 E2M1", fp4))]
    return lt.LowBitReport("m", 64, 1, 10, rows)


def test_lowbit_verdict():
    assert lt.lowbit_verdict(_lowbit(17, 19, 20.6, 19.5)) == lt.Verdict(True, "nf4_best")
    assert lt.lowbit_verdict(_lowbit(22, 18, 20, 19)) == lt.Verdict(False, "groups_no_help")
    assert lt.lowbit_verdict(_lowbit(17, 19, 18, 19.5)) == lt.Verdict(False, "nf4_not_best")


def test_lowbit_errors_and_accuracy_on_a_real_sim():
    net = randomized(nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10)))
    r = lt.lowbit_errors(QuantSim(net), name="tiny")
    assert [row["format"] for row in r.rows] == ["INT4 per-channel", "INT4 per-group", "NF4", "FP4 E2M1"]
    assert r.layers == 2 and r.weights == 8 * 9 + 10 * 8 * 26 * 26
    assert all(10 < row["sqnr_db"] < 30 for row in r.rows)  # 4 bits: about 20 dB, never exact
    x = torch.randn(16, 1, 28, 28)
    labels = net(x).argmax(1)
    acc = lt.lowbit_accuracy(net, [x], labels)
    assert acc["FP32"] == 1.0 and set(acc) == {"FP32", "INT4 per-channel", "INT4 per-group", "NF4", "FP4 E2M1"}


def test_smoothquant_does_not_apply_without_layernorm_linear_and_applies_with_it():
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).eval()
    x = [torch.randn(8, 1, 28, 28)]
    r = lt.smoothquant_topic(conv, x, None, None)
    assert not r.applies and lt.smoothquant_verdict(r) == lt.Verdict(None, "no_norm_linear")
    torch.manual_seed(0)
    tf = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.LayerNorm(16), nn.Linear(16, 10)).eval()
    with torch.no_grad():
        tf[2].weight[3] = 30.0  # one outlier channel out of the LayerNorm
    r = lt.smoothquant_topic(tf, x, x, tf(x[0]).argmax(1))
    assert r.applies and len(r.pairs) == 1 and r.pairs[0]["outlier_after"] < r.pairs[0]["outlier_before"]
    assert r.accuracy_before is not None and r.accuracy_after is not None


def _sq(before, after, fp32=0.9, a_before=0.8, a_after=0.85):
    return lt.SmoothQuantReport("m", True, 0.5, [{"outlier_before": before, "outlier_after": after}], fp32, a_before,
                                a_after, 10)


def test_smoothquant_verdict():
    assert lt.smoothquant_verdict(_sq(10, 2)) == lt.Verdict(True, "holds")
    assert lt.smoothquant_verdict(_sq(2, 3)) == lt.Verdict(False, "outliers_not_reduced")
    assert lt.smoothquant_verdict(_sq(10, 2, a_after=0.79)) == lt.Verdict(False, "accuracy_not_improved")
    assert lt.smoothquant_verdict(_sq(10, 2, fp32=0.9, a_before=0.9, a_after=0.9)) == lt.Verdict(False, "no_gap")


def test_fp16_overflows_where_bf16_does_not():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).eval()
    sim = QuantSim(net)
    x = torch.randn(4, 1, 28, 28)
    stats = sim.collect_stats([x])
    r = lt.fp16_overflow(net, stats, x)
    assert r.sweep[0]["scale"] == 1.0 and r.sweep[0]["fp16_finite"]
    assert r.overflow_scale is not None and r.bf16_finite_at_overflow
    # the overflow comes where the largest activation crosses 65504 (within the factor-2 steps of the sweep)
    assert r.overflow_scale * r.max_abs_activation * 2 > lt.FP16_MAX
    assert r.sqnr_db["FP16"] > r.sqnr_db["BF16"]  # 11 significand bits against 8
    assert lt.fp16_verdict(r) == lt.Verdict(True, "holds")
    r.bf16_finite_at_overflow = False
    assert lt.fp16_verdict(r).holds is False
    r.overflow_scale = None
    assert lt.fp16_verdict(r) == lt.Verdict(False, "no_overflow_in_sweep")


def test_channel_spreads_find_depthwise_layers_and_dead_channels():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.Linear(4 * 24 * 24, 2)).eval()
    with torch.no_grad():
        net[1].weight.fill_(1.0)
        net[1].weight[2] = 0.0  # a dead channel
    r = lt.channel_spreads(QuantSim(net), name="dw")
    dw = [row for row in r.rows if row["depthwise"]]
    assert [row["layer"] for row in dw] == ["1"] and dw[0]["zero_channels"] == 1 and dw[0]["spread"] == lt.SPREAD_CAP
    assert r.median_depthwise == lt.SPREAD_CAP and r.median_other is not None and math.isfinite(r.median_other)


def _spread(dw, other, acc=None):
    return lt.SpreadReport("m", [], dw, other, 0.9, acc or {})


def test_spread_verdict():
    assert lt.spread_verdict(_spread(None, 2.0)) == lt.Verdict(None, "no_depthwise")
    assert lt.spread_verdict(_spread(1.5, 2.0)) == lt.Verdict(False, "depthwise_not_wider")
    assert lt.spread_verdict(_spread(7.0, 2.0)) == lt.Verdict(True, "depthwise_wider")
    assert lt.spread_verdict(_spread(7.0, 2.0, {"per-tensor": 0.1, "per-channel": 0.9})) == lt.Verdict(True, "holds")
    assert lt.spread_verdict(_spread(7.0, 2.0, {"per-tensor": 0.902, "per-channel": 0.904})) == \
        lt.Verdict(False, "per_tensor_holds")


def test_measure_topic_refuses_an_unknown_topic():
    with pytest.raises(ValueError, match="unknown topic"):
        lt.measure_topic("nope", "fm_resnet")


def test_each_measured_topic_has_its_own_result_type():
    from tests.helpers import tiny_fashion_model

    tiny = tiny_fashion_model()
    spread = lt.measure_topic("spread", tiny, calib_size=16, eval_size=20)
    assert isinstance(spread, lt.SpreadRun) and spread.eval_images == 20 and spread.scored_by == "labels"
    assert set(spread.accuracy) == {"FP32", "per-tensor", "per-channel"}
    assert all(0 <= a <= 1 and a * 20 == round(a * 20) for a in spread.accuracy.values())  # counts of 20 images
    lowbit = lt.measure_topic("lowbit", tiny, calib_size=16, eval_size=20)
    assert isinstance(lowbit, lt.LowbitRun) and "FP32" in lowbit.accuracy and len(lowbit.accuracy) > 2
