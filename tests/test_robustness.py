"""Bad inputs give clear messages; concurrent sessions do not disturb each other; same seed, same numbers."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

from qcore.cli import main
from qcore.analysis.experiments import compare_methods
from qcore.runtime.machine import MACHINE_LOCK
from qcore.run.jobs import Job
from qcore.zoo.models import finish_loading, get_spec
from qcore.train.qat import QATRecipe, run_qat
from tests.helpers import tiny_fashion_model


def _as_user_model(net: nn.Module, name: str):
    base = get_spec("fm_resnet")
    from qcore.zoo.models import ModelSpec

    spec = ModelSpec(name, "user", name, (1, 28, 28), base.preprocess, base.class_names, "fashion-mnist", "test",
                     lambda: net)
    return finish_loading(spec, net)


# --- bad inputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["calibrate", "--calib-size", "0", "--eval-size", "10"], "calibration needs at least one image"),
    (["calibrate", "--eval-size", "0"], "evaluation needs at least one image"),
    (["calibrate", "--act-bits", "17", "--eval-size", "10"], "bits must be an integer from 2 to 16"),
    (["calibrate", "--weight-bits", "1", "--eval-size", "10"], "weight_bits must be an integer from 2 to 8"),
    (["qat", "--weight-bits", "9", "--steps", "1", "--out", "unused.json"], "weight_bits must be an integer from 2 to 8"),
    (["qat", "--steps", "0", "--out", "unused.json"], "steps must be at least 1"),
])
def test_bad_numbers_are_one_clear_line(argv, message, capsys, tiny_fashion_mnist):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_empty_dataset_folder_is_a_message(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["calibrate", "--data", f"imagefolder:{tmp_path / 'empty'}", "--eval-size", "10"]) == 2
    assert "no readable images" in capsys.readouterr().err


def test_nan_or_inf_weights_are_refused_by_name():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    net(torch.zeros(1, 1, 28, 28))
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf values \(in 0\.weight\)"):
        _as_user_model(net, "nan_net")


class Overflow(nn.Module):
    """Finite weights, but activations scaled by `gain`: huge, or overflowing to inf."""

    def __init__(self, gain: float):
        super().__init__()
        self.gain = gain
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.conv(x * self.gain).amax((2, 3)))


@pytest.mark.parametrize("gain, message", [(float("inf"), "NaN or inf outputs"), (1e38, "overflow float32")])
def test_inf_or_huge_activations_are_a_clear_error(gain, message, tiny_fashion_mnist):
    loaded = _as_user_model(Overflow(gain), "overflow")
    with pytest.raises(FloatingPointError, match=message):
        compare_methods(loaded, methods=["max"], calib_size=8, eval_size=10)


class WithConv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.seq = nn.Conv1d(4, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.seq(self.conv(x).flatten(2)).mean(2))


def test_unsupported_layers_are_listed_left_float_and_reported(tiny_fashion_mnist):
    torch.manual_seed(0)  # an untrained net's logits are close together: its weights must not change run to run
    loaded = _as_user_model(WithConv1d(), "conv1d_net")
    report = compare_methods(loaded, methods=["max"], calib_size=8, eval_size=10)
    assert report.unsupported_layers == ["seq (Conv1d)"]
    # the rest is quantized and still computes the model: W8A8 logits within 30 dB of FP32 (a float layer computed
    # wrongly, or skipped, would not be). Top-1 agreement says little here: the untrained net's logits are nearly
    # equal, so a 40 dB difference can flip one of 10 images (unseeded weights gave 8 and 10 of 10).
    method = report.methods[0]
    assert method.logit_sqnr_db > 30 and method.agreement >= 0.8, method  # seed 0: 41.8 dB, 10 of 10


# --- concurrency and determinism ------------------------------------------------------------------
def _qat(model, tmp_path, tag):
    recipe = QATRecipe(steps=6, minutes=None, epochs=2, batch_size=16, int8_each_epoch=False, latency_iters=2)
    report, sim = run_qat(model, recipe=recipe, calib_size=16, eval_size=20, final_eval_size=20,
                          out_dir=tmp_path / tag)
    weights = {k: v.clone() for k, v in sim.state_dict().items()}
    return {k: getattr(report, k) for k in ("fp32_accuracy", "ptq_accuracy", "qat_accuracy", "int8_accuracy")}, weights


def _calib(model):
    report = compare_methods(model, methods=["max", "entropy", "mse"], calib_size=16, eval_size=20)
    return [(r.method, r.accuracy, r.agreement) for r in report.methods]


def test_same_config_and_seed_give_the_same_numbers(tiny_fashion_mnist, tmp_path):
    model = tiny_fashion_model()
    assert _calib(model) == _calib(model)
    (a, wa), (b, wb) = _qat(model, tmp_path, "a"), _qat(model, tmp_path, "b")
    assert a == b
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_two_sessions_at_once_get_what_each_gets_alone(tiny_fashion_mnist, tmp_path):
    shared = tiny_fashion_model()  # like a st.cache_resource model: one object for every session
    before = {k: v.clone() for k, v in shared.module.state_dict().items()}
    alone_calib = _calib(shared)
    alone_qat, alone_w = _qat(shared, tmp_path, "alone")
    results = {}

    def session(name, fn):
        results[name] = fn()

    threads = [threading.Thread(target=session, args=("calib", lambda: _calib(shared))),
               threading.Thread(target=session, args=("qat", lambda: _qat(shared, tmp_path, "together")))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results["calib"] == alone_calib
    together_qat, together_w = results["qat"]
    assert together_qat == alone_qat
    assert all(torch.allclose(together_w[k], alone_w[k], atol=1e-6) for k in alone_w)
    assert all(torch.equal(v, before[k]) for k, v in shared.module.state_dict().items())


def test_training_waits_while_a_latency_measurement_holds_the_machine(tiny_fashion_mnist, tmp_path):
    recipe = QATRecipe(steps=4, minutes=None, epochs=1, batch_size=16, latency_iters=2)

    def work(job):
        return run_qat(tiny_fashion_model(), recipe=recipe, calib_size=16, eval_size=20, final_eval_size=20,
                       out_dir=tmp_path / "q", progress=job.update, on_metric=job.emit)

    with MACHINE_LOCK:
        job = Job("qat", work).start()
        time.sleep(3)
        snap = job.snapshot()
        assert snap["status"] == "running"
        assert not any(m.kind == "step" for m in snap["metrics"])  # no training step while the lock is held
    assert job.wait(60)["status"] == "done"


def test_images_of_the_wrong_size_are_a_message():
    from qcore.zoo.data import ImageSet
    from qcore.zoo.inputs import check_compatible
    from qcore.zoo.models import ModelSpec

    base = get_spec("fm_resnet")
    net = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    spec = ModelSpec("net32", "user", "32x32 net", (1, 32, 32), base.preprocess, base.class_names, "user", "test",
                     lambda: net)
    loaded = finish_loading(spec, net)
    odd = ImageSet("imagefolder:/x", torch.zeros(4, 3, 256, 256, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
                   tuple("abcd"))
    with pytest.raises(ValueError, match="has 256x256 images; net32 takes 32x32 inputs"):
        check_compatible(loaded, odd)
