import json
import subprocess
import sys

import pytest

from qcore.cli import main


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
    assert {"identity", "inventory", "fp32_accuracy", "methods", "stats_pass_seconds", "fp32_pass_seconds"} <= set(report)
    assert report["identity"]["model"] == "fm_resnet" and report["identity"]["data"] == "fashion-mnist"
    assert [m["method"] for m in report["methods"]] == ["max", "percentile:99.99", "entropy", "mse"]
    assert 0.85 < report["fp32_accuracy"] <= 1.0
    rows = {row["method"]: row for row in report["methods"]}
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["agreement"] <= 1.0
    for method in ("max", "percentile:99.99", "entropy", "mse"):  # W8A8 per-channel barely moves
        assert rows[method]["accuracy"] > report["fp32_accuracy"] - 0.015, rows[method]
    assert "max" in proc.stdout and "percentile:99.99" in proc.stdout  # the printed table


@pytest.fixture
def english_environment(monkeypatch):
    """No language from the environment: each test says which it wants."""
    for var in ("QX_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(var, raising=False)


def _hangul(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in text)


def test_lang_ko_prints_korean_and_english_is_the_default(capsys, english_environment):
    assert main(["--lang", "ko", "models"]) == 0
    korean = capsys.readouterr().out
    assert "* fm_resnet" in korean and "이름" in korean and "기본 모델" in korean
    assert "default model" not in korean
    assert main(["models"]) == 0
    english = capsys.readouterr().out
    assert "default model" in english and not _hangul(english)


def test_a_cli_error_is_one_korean_line_with_exit_code_2(capsys, english_environment):
    assert main(["--lang", "ko", "train", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("오류: 내장 모델만 훈련할 수 있습니다: ") and err.count("\n") == 1
    assert main(["train", "resnet18"]) == 2
    assert capsys.readouterr().err.startswith("error: only built-in models can be trained: ")


def test_the_environment_picks_korean_and_the_flag_overrides_it(capsys, monkeypatch, english_environment):
    monkeypatch.setenv("LANG", "ko_KR.UTF-8")
    assert main(["history", "--compare", "1,x"]) == 2
    assert capsys.readouterr().err.startswith("오류: 실행 id는 쉼표로 구분한 숫자여야 합니다")
    monkeypatch.setenv("QX_LANG", "en")
    assert main(["history", "--compare", "1,x"]) == 2
    assert capsys.readouterr().err.startswith("error: run ids are numbers separated by commas")
    assert main(["--lang", "ko", "history", "--compare", "1,x"]) == 2
    assert _hangul(capsys.readouterr().err)


def test_argparse_help_and_its_own_errors_follow_the_language(capsys, english_environment):
    with pytest.raises(SystemExit) as exit_help:
        main(["--lang", "ko", "calibrate", "--help"])
    assert exit_help.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("사용법: python -m qcore calibrate") and "활성값 비트 수" in help_text
    with pytest.raises(SystemExit) as exit_bad:
        main(["--lang", "ko", "deploy", "--backend", "tpu", "--out", "x"])
    assert exit_bad.value.code == 2
    assert "오류: 인자 --backend: 잘못된 선택: 'tpu'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["deploy", "--backend", "tpu", "--out", "x"])  # argparse's English is left as it was
    assert "error: argument --backend: invalid choice: 'tpu'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["sensitivity", "--out", "x.json"], ["recover", "--steps", "cle", "--out", "x.json"],
                                     ["workflow", "--out", "x"], ["qat", "--out", "x.json"], ["graph", "--out", "x.html"]])
def test_every_command_loads_the_weights_it_is_given(capsys, tmp_path, command):
    """--weights reaches the model of every command (sensitivity, recover, workflow and qat once ignored it and
    ran the registry's own weights): a missing file is the error it names, before any work."""
    missing = tmp_path / "none.pth"
    assert main([*command, "--model", "fm_resnet", "--weights", str(missing)]) == 2
    assert "none.pth" in capsys.readouterr().err


# --- one set of quantization flags on every command that quantizes (issue 23) ---------------------
QUANTIZING = {"calibrate": [], "deploy": ["--out", "d"], "sensitivity": ["--out", "s.json"],
              "recover": ["--steps", "cle", "--out", "r.json"], "qat": ["--out", "q.json"], "workflow": ["--out", "w"],
              "graph": ["--out", "g.html"],
              "diagnose": ["--out", "d.json"]}


def _parsed(argv):
    """The parsed arguments, with the CLI's messages in English as main() would choose them for an English
    terminal: the language is module state, and an earlier `main(["--lang", "ko", ...])` leaves it Korean."""
    from qcore.cli import build_parser
    from qcore.cli.language import set_language

    set_language(["--lang", "en"])
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("command", list(QUANTIZING))
def test_every_quantizing_command_takes_the_same_flags_and_they_reach_the_config(command, capsys):
    from qcore.cli.options import quant_config as _quant_config

    args = _parsed([command, *QUANTIZING[command], "--weight-bits", "5", "--act-bits", "6", "--granularity", "tensor",
                    "--symmetric", "--method", "percentile:99.9", "--weight-range", "full"])
    config = _quant_config(args)
    d = config.default
    assert (d.weight_bits, d.act_bits, d.weight_granularity, d.act_symmetric, d.act_method) == (
        5, 6, "tensor", True, "percentile:99.9")
    assert config.weight_range == "full"
    assert _quant_config(_parsed([command, *QUANTIZING[command], "--asymmetric"])).default.act_symmetric is False
    assert capsys.readouterr().err == ""  # nothing deprecated, nothing ignored


@pytest.mark.parametrize("command", list(QUANTIZING))
def test_defaults_are_w8a8_per_channel_max_except_qat_weights(command):
    from qcore.cli.options import quant_config as _quant_config
    from qcore.quant.qconfig import LayerConfig

    d = _quant_config(_parsed([command, *QUANTIZING[command]])).default
    assert d == LayerConfig(weight_bits=4 if command == "qat" else 8)


@pytest.mark.parametrize("command", list(QUANTIZING))
def test_bits_is_a_deprecated_alias_of_act_bits_that_warns(command, capsys):
    from qcore.cli.options import quant_config as _quant_config

    assert _quant_config(_parsed([command, *QUANTIZING[command], "--bits", "4"])).default.act_bits == 4
    err = capsys.readouterr().err
    assert "--bits is deprecated" in err and "--act-bits" in err


def test_config_file_overrides_the_bit_flags_and_says_which_it_ignored(tmp_path, capsys):
    from qcore.cli.options import quant_config as _quant_config
    from qcore.quant.qconfig import QuantConfig

    path = tmp_path / "c.json"
    path.write_text(QuantConfig().with_default(weight_bits=3, act_bits=5, act_method="mse").to_json())
    args = _parsed(["sensitivity", "--out", "s.json", "--config", str(path), "--act-bits", "8", "--method", "max"])
    d = _quant_config(args).default
    assert (d.weight_bits, d.act_bits, d.act_method) == (3, 5, "mse")
    err = capsys.readouterr().err
    assert "ignoring --act-bits, --method" in err


def test_calibrate_takes_one_method_or_several_not_both(capsys):
    assert main(["calibrate", "--method", "mse", "--methods", "max,mse"]) == 2
    assert "not both" in capsys.readouterr().err


def test_calibrate_progress_to_a_pipe_is_one_line_per_stage(tiny_fashion_mnist, capsys):
    """capsys's stderr is not a terminal, as a file or a pipe is not: no carriage returns, no repeated stage."""
    assert main(["calibrate", "--methods", "max,mse", "--calib-size", "60", "--eval-size", "20", "--act-bits", "6"]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == len(set(lines)) and "evaluating max" in lines and "evaluating mse" in lines
    assert "mse" in captured.out


# --- diagnose (issue 25) -------------------------------------------------------------------------------------
def test_diagnose_an_own_pt2_model_ranks_its_causes_and_applies_the_best_fix(tmp_path, capsys):
    """A .pt2 with one depthwise channel 40x wider than the rest, at W8 per-tensor: the table names it, the JSON
    holds the split and the causes, and --apply-best measures the fix (its own top-1, not the one before)."""
    import torch

    from tests.analysis.test_diagnosis import tiny_depthwise

    net = tiny_depthwise(40.0).module
    path = tmp_path / "dw.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(2, 1, 28, 28),),
                                          dynamic_shapes=({0: torch.export.Dim.AUTO},)), path)
    out = tmp_path / "d.json"
    assert main(["diagnose", "--model", str(path), "--input-shape", "1,28,28", "--preprocess", "custom", "--mean",
                 "0.286", "--std", "0.353", "--resize", "28", "--data", "fashion-mnist", "--granularity", "tensor",
                 "--calib-size", "64", "--eval-size", "128", "--apply-best", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert {"fp32_accuracy", "accuracy", "weights_only_accuracy", "acts_only_accuracy", "weight_share", "causes",
            "layers"} <= set(report)
    top = report["causes"][0]
    assert top["kind"] == "channel_spread" and top["fix"]["changes"] == {"weight_granularity": "channel"}
    assert "unequal weight channels" in printed and top["fix"]["describe"] in printed
    fix = json.loads(out.with_suffix(".fix.json").read_text())
    assert fix["before"] == report["accuracy"] and fix["delta"] == fix["after"] - fix["before"]
    assert fix["config"]["layers"][top["layer"]]["weight_granularity"] == "channel"
    assert f"-> {fix['after']:.2%}" in printed
    from qcore.store import history  # the run is in the History, like every other command's

    stored = history.list_runs(kind="diagnosis")
    assert len(stored) == 1 and stored[0]["metrics"]["accuracy"] == report["accuracy"]
    assert stored[0]["metrics"]["weights_only_accuracy"] == report["weights_only_accuracy"]
    assert f"saved as run {stored[0]['id']} in the history" in printed
    assert main(["history", "--kind", "diagnosis"]) == 0


@pytest.mark.slow
def test_diagnose_mobilenet_w4_per_tensor_in_korean(tmp_path):
    out = tmp_path / "d.json"
    proc = subprocess.run([sys.executable, "-m", "qcore", "--lang", "ko", "diagnose", "--model", "fm_mobilenetv2",
                           "--weight-bits", "4", "--granularity", "tensor", "--calib-size", "128", "--eval-size", "300",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "가중치 채널 범위 불균형" in proc.stdout and "가중치만 양자화" in proc.stdout
    report = json.loads(out.read_text())
    assert report["weight_share"] > 0.9
