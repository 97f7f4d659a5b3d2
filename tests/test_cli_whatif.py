"""`python -m qcore whatif`: one layer edited, before and after printed, the JSON written."""

import json

from qcore.cli import main
from qcore.quant.qconfig import QuantConfig


def test_whatif_prints_before_and_after_and_writes_the_edited_config(tiny_fashion_mnist, capsys, tmp_path):
    out = tmp_path / "r.json"
    assert main(["whatif", "--layer", "fc", "--clip=-1,1", "--bits", "6", "--calib-size", "60", "--eval-size", "20",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "layer fc" in printed and "[-1, 1] (fixed)" in printed and "act_clip=(-1.0, 1.0)" in printed
    report = json.loads(out.read_text())
    before, after = report["before"], report["after"]
    assert before["changes"] == {} and after["changes"] == {"act_clip": [-1.0, 1.0], "weight_bits": 6, "act_bits": 6}
    assert (after["clip_min"], after["clip_max"]) == (-1.0, 1.0) and before["range_method"] == "max"
    assert after["delta_sqnr_db"] == after["layer_sqnr_db"] - before["layer_sqnr_db"] != 0
    assert after["eval_size"] == 20 and 0 <= after["accuracy"] <= 1
    kept = QuantConfig.from_dict(report["config"])  # the edited config, ready for --config on other commands
    assert kept.for_layer("fc").act_clip == (-1.0, 1.0) and kept.for_layer("fc").act_bits == 6


def test_whatif_float_and_bad_input(tiny_fashion_mnist, capsys):
    assert main(["whatif", "--layer", "stem.0", "--float", "--calib-size", "60", "--eval-size", "20"]) == 0
    assert "enabled=False" in capsys.readouterr().out
    assert main(["whatif", "--layer", "nope", "--calib-size", "60", "--eval-size", "20"]) == 2
    assert "no layer 'nope'" in capsys.readouterr().err
    assert main(["whatif", "--layer", "fc", "--clip=2,1"]) == 2
    assert "LO < HI" in capsys.readouterr().err
