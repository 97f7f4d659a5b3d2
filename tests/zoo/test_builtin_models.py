"""The shipped checkpoints: real weights that meet the accuracy the README promises."""

import json

import pytest
import torch

from qcore.zoo.data import load_fashion_mnist
from qcore.analysis.evaluate import evaluate
from qcore.analysis.experiments import compare_methods
from qcore.zoo.models import ASSETS, BUILTIN, load_model


@pytest.mark.parametrize("name", list(BUILTIN))
def test_checkpoint_is_small_and_documented(name):
    ckpt, meta = ASSETS / f"{name}.pt", ASSETS / f"{name}.json"
    assert ckpt.is_file() and ckpt.stat().st_size < 4 * 2**20
    record = json.loads(meta.read_text())
    assert record["command"].startswith(f"python -m qcore train {name}")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_reaches_its_accuracy_on_the_full_test_set(name):
    """91% for the CNNs; 90% for the small ViT (what issue 15 asks of it, from scratch in 20 epochs on 2 cores)."""
    loaded = load_model(name)
    test = load_fashion_mnist("test")
    result = evaluate(loaded.module, loaded.spec.preprocess, test)
    assert len(test) == 10_000
    assert result.top1 >= (0.90 if name == "fm_vit" else 0.91), f"{name}: {result.top1:.4f}"
    assert result.top1 == pytest.approx(loaded.info["test_accuracy"], abs=2e-4)  # same weights as trained


@pytest.mark.slow
def test_per_tensor_weights_hurt_mobilenet_more_than_per_channel():
    """The textbook effect the MobileNetV2-style model is there to show (depthwise weight ranges)."""
    kw = dict(methods=["max"], bits=8, weight_bits=4, calib_size=256, eval_size=1000)
    per_channel = compare_methods("fm_mobilenetv2", granularity="channel", **kw)
    per_tensor = compare_methods("fm_mobilenetv2", granularity="tensor", **kw)
    assert per_tensor.methods[0].accuracy < per_channel.methods[0].accuracy - 0.05


def test_loaded_models_are_read_only():
    loaded = load_model("fm_gelunet")
    assert not loaded.module.training
    assert all(not p.requires_grad for p in loaded.module.parameters())
    with torch.no_grad():
        assert loaded.module(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILTIN))
def test_real_int8_matches_the_simulation(name, tmp_path):
    """Each built-in converts on both backends; INT8 accuracy within 0.5 points of the simulation."""
    from qcore.runtime.deploy import deploy

    report = deploy(name, out_dir=tmp_path, eval_size=1000, iters=3, warmup=1, batch_sizes=(1,))
    paths = ("ort_u8s8", "x86")
    if name == "fm_vit":  # torch.ao's x86 FX path puts observers on transposes and slices the simulation leaves
        paths = ("ort_u8s8",)  # alone, so it is skipped with the reason; ONNX Runtime takes the ViT
        assert any(n.startswith("x86 skipped: x86 backend could not take ranges") for n in report.notes), report.notes
    for path in paths:
        entry = report.paths[path]
        assert abs(entry.accuracy - report.simulation_accuracy) <= 0.005, (path, entry)
        assert entry.agreement_with_simulation >= 0.99, (path, entry)
    assert report.int8_accuracy >= report.fp32_accuracy - 0.01
