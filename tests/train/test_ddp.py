"""QAT on torch.distributed (gloo, 2 processes): the same steps as one process on the same global batch, a lost
rank stops the run with a clear message, and bad requests are refused before any process starts."""

from __future__ import annotations

import time

import pytest
import torch

from qcore.quant.qconfig import QuantConfig
from qcore.train.ddp import KILL_RANK, RankLost
from qcore.train.qat import QATRecipe, run_qat

CONFIG = QuantConfig().with_default(weight_bits=4)
RECIPE = QATRecipe(steps=6, minutes=None, epochs=1, batch_size=64, int8_each_epoch=False)
SIZES = {"calib_size": 128, "eval_size": 200, "final_eval_size": 200}


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    one = run_qat("fm_resnet", CONFIG, RECIPE, **SIZES, out_dir=tmp_path / "one")
    seen = []
    two = run_qat("fm_resnet", CONFIG, RECIPE, **SIZES, out_dir=tmp_path / "two", nproc=2,
                  progress=lambda f, m: seen.append(m))
    assert two.report.distributed == {"engine": "torch.distributed", "world": 2, "device": "cpu", "backend": "gloo"}
    assert one.report.distributed["world"] == 1 and two.report.steps == one.report.steps == 6
    assert any("step 6/6" in m for m in seen)  # rank 0's progress streamed back
    w1, w2 = dict(one.sim.named_parameters()), dict(two.sim.named_parameters())
    assert w1.keys() == w2.keys()
    worst = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    # DDP sums two half-batch gradients where one process sums one batch: the same maths in another order.
    # AdamW divides by sqrt(v), which magnifies those last-bit differences on near-zero gradients, so after
    # 6 steps at lr ~3e-5 the weights agree to ~1e-5 (7.7e-6 measured on the AVX2 class), not bit for bit; a
    # difference that small moves at most one of the 200 test images across a decision boundary.
    assert worst < 3e-5
    assert abs(one.report.qat_accuracy - two.report.qat_accuracy) <= 1 / 200 + 1e-9


@pytest.mark.slow
def test_a_lost_rank_stops_the_run_with_its_rank_and_exit_code(tmp_path, monkeypatch):
    monkeypatch.setenv(KILL_RANK, "1")
    start = time.perf_counter()
    with pytest.raises(RankLost, match=r"QAT rank 1 of 2 stopped \(exit code 9\)"):
        run_qat("fm_resnet", CONFIG, RECIPE, **SIZES, out_dir=tmp_path, nproc=2)
    assert time.perf_counter() - start < 120


def test_requests_that_cannot_split_are_refused_before_starting(tmp_path):
    with pytest.raises(ValueError, match="split evenly over 3"):
        run_qat("fm_resnet", CONFIG, RECIPE, **SIZES, out_dir=tmp_path, nproc=3)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            run_qat("fm_resnet", CONFIG, RECIPE, **SIZES, out_dir=tmp_path, device="cuda")
