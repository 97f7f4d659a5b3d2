import json
import subprocess
import sys

import pytest

from qcore.__main__ import main


def test_models_lists_every_model_with_the_default_marked(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "* fm_resnet" in out
    for name in ("fm_mobilenetv2", "fm_gelunet", "resnet18", "efficientnet_b0", "regnet_x_400mf"):
        assert name in out


def test_bad_input_is_one_clear_line_and_exit_2(capsys):
    assert main(["calibrate", "--methods", "max,magic", "--out", "unused.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown calibration method 'magic'") and "Traceback" not in err
    assert main(["train", "resnet18"]) == 2


def test_torchvision_model_without_data_says_what_to_pass(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("qcore.zoo.models.torchvision_weight_paths", lambda name: [tmp_path / "none.pth"])
    assert main(["evaluate", "--model", "resnet18", "--weights", str(tmp_path / "none.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_calibrate_on_the_default_model_writes_the_contract(tmp_path):
    out = tmp_path / "cal.json"
    proc = subprocess.run(
        [sys.executable, "-m", "qcore", "calibrate", "--methods", "max,percentile:99.99,entropy,mse",
         "--calib-size", "256", "--eval-size", "1000", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert {"model", "data", "fp32_accuracy", "methods", "stats_pass_seconds", "fp32_pass_seconds"} <= set(report)
    assert report["model"] == "fm_resnet" and report["data"] == "fashion-mnist"
    assert [m["method"] for m in report["methods"]] == ["max", "percentile:99.99", "entropy", "mse"]
    assert 0.85 < report["fp32_accuracy"] <= 1.0
    rows = {row["method"]: row for row in report["methods"]}
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["agreement"] <= 1.0
    for method in ("max", "percentile:99.99", "entropy", "mse"):  # W8A8 per-channel barely moves
        assert rows[method]["accuracy"] > report["fp32_accuracy"] - 0.015, rows[method]
    assert "max" in proc.stdout and "percentile:99.99" in proc.stdout  # the printed table
