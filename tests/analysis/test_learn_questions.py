"""The Learn page's questions: the STE measurement on real weights and the QAT verdicts' rules."""

import torch

from qcore.analysis import learn_questions as lq
from qcore.analysis.learn_topics import Verdict


def test_round_has_no_gradient_and_the_ste_passes_exactly_the_in_range_weights():
    w = torch.randn(4000, generator=torch.Generator().manual_seed(0))
    r = lq.ste_gradients(w, "w", bits=4, clip_quantile=0.99)
    assert r.round_nonzero == 0 and r.ste_other == 0
    assert r.ste_ones == r.in_range and r.ste_zeros == r.weights - r.in_range
    assert 0 < r.ste_zeros < 0.02 * r.weights  # about 1% clipped
    assert lq.ste_verdict(r) == Verdict(True, "holds")
    r.ste_ones -= 1
    assert lq.ste_verdict(r) == Verdict(False, "ste_mask_differs")


def _qat_report(fp32, ptq, qat, history=None):
    return {"identity": {"model": "m"}, "config": {"default": {"weight_bits": 4, "weight_granularity": "channel"}},
            "fp32_accuracy": fp32, "ptq_accuracy": ptq, "qat_accuracy": qat, "steps": 10,
            "recipe": {"train_size": 6000}, "eval_images": 100, "seconds": 1.0, "monitor_images": 100,
            "history": history or []}


def test_qat_need_verdict_flips_with_the_numbers():
    assert lq.qat_need_verdict(lq.qat_need(_qat_report(0.92, 0.80, 0.90))) == Verdict(True, "qat_recovers")
    assert lq.qat_need_verdict(lq.qat_need(_qat_report(0.92, 0.921, 0.92))) == Verdict(False, "ptq_enough")
    assert lq.qat_need_verdict(lq.qat_need(_qat_report(0.92, 0.80, 0.805))) == Verdict(False, "qat_no_gain")


def _epochs(fp32, ptq, accs):
    return [{"epoch": i, "step": 10 * i, "fake_quant_accuracy": a, "fp32_accuracy": fp32, "ptq_accuracy": ptq}
            for i, a in enumerate([ptq, *accs])]


def test_qat_data_verdict_flips_with_the_numbers():
    r = lq.qat_data(_qat_report(0.92, 0.80, 0.9, _epochs(0.92, 0.80, [0.88, 0.9, 0.91])), 60000)
    assert r.train_fraction == 0.1 and [e["epoch"] for e in r.epochs] == [0, 1, 2, 3]
    assert lq.qat_data_verdict(r) == Verdict(True, "fraction_enough")
    r = lq.qat_data(_qat_report(0.92, 0.80, 0.9, _epochs(0.92, 0.80, [0.82, 0.85, 0.9])), 60000)
    assert lq.qat_data_verdict(r) == Verdict(False, "fraction_not_enough")
    r = lq.qat_data(_qat_report(0.92, 0.915, 0.9, _epochs(0.92, 0.915, [0.91])), 60000)
    assert lq.qat_data_verdict(r) == Verdict(None, "no_gap")
