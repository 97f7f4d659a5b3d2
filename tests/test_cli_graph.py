"""python -m qcore graph: a standalone HTML page (plotly inline) and JSON, on a built-in model and on an own .pt2."""

import copy
import json

import pytest
import torch

from qcore.cli import main


def test_graph_writes_offline_html_and_json(tmp_path, capsys):
    html, js = tmp_path / "g" / "graph.html", tmp_path / "graph.json"
    assert main(["graph", "--model", "fm_resnet", "--calib-size", "16", "--metric", "clip_error", "--out", str(html),
                 "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "fm_resnet: 61 nodes, 66 edges" in out and "blocks collapsed at module depth" in out
    page = html.read_text()
    assert page.count("Plotly.newPlot") == 2  # the graph, and float vs quantized side by side
    assert "<script src=" not in page and len(page) > 3_000_000  # plotly.js inline: it opens offline
    assert "Q(layers.2.conv1)" not in page and "layers.2" in page  # collapsed blocks, not every node
    graph = json.loads(js.read_text())
    assert graph["calib_images"] == 16 and len(graph["nodes"]) == 61
    worst = max((n for n in graph["nodes"] if n["metrics"]["clip_error"] is not None),
                key=lambda n: n["metrics"]["clip_error"])
    assert f"{worst['label']}" in out.split("the worst nodes by clipping error:")[1].splitlines()[1]


def test_graph_colours_by_a_sensitivity_report(tmp_path, capsys):
    report = tmp_path / "s.json"
    assert main(["graph", "--model", "fm_resnet", "--metric", "sensitivity", "--out", str(tmp_path / "x.html")]) == 2
    assert "--sensitivity FILE" in capsys.readouterr().err
    rows = [{"name": "layers.1.conv2", "kind": "conv", "only_this_quantized": 0.8, "all_but_this": 0.9, "sqnr_db": 20.0,
             "mse": 0.1, "cosine": 0.99}]
    report.write_text(json.dumps({"model": "fm_resnet", "eval_size": 100, "layers": rows}))
    assert main(["--lang", "ko", "graph", "--model", "fm_resnet", "--calib-size", "16", "--metric", "sensitivity",
                 "--sensitivity", str(report), "--max-nodes", "0", "--out", str(tmp_path / "s.html"),
                 "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "노드 61개" in out and "layers.1.conv2" in out
    nodes = {n["label"]: n for n in json.loads((tmp_path / "s.json").read_text())["nodes"]}
    assert nodes["layers.1.conv2"]["metrics"]["sensitivity"] == 0.8
    assert nodes["Q(layers.1.conv2)"]["metrics"]["sensitivity"] == 0.8  # the layer's output quantizer too
    assert nodes["layers.1.conv1"]["metrics"]["sensitivity"] is None


@pytest.mark.slow
def test_graph_of_an_own_pt2_file(tmp_path, capsys):
    from qcore.zoo.models import load_model

    net = copy.deepcopy(load_model("fm_mobilenetv2").module)
    x = torch.randn(2, 1, 28, 28)
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},)), tmp_path / "m.pt2")
    assert main(["graph", "--model", str(tmp_path / "m.pt2"), "--input-shape", "1,28,28", "--preprocess", "custom",
                 "--mean", "0.286", "--std", "0.353", "--resize", "28", "--data", "fashion-mnist", "--calib-size", "16",
                 "--out", str(tmp_path / "m.html"), "--json", str(tmp_path / "m.json")]) == 0
    graph = json.loads((tmp_path / "m.json").read_text())
    kinds = [n["kind"] for n in graph["nodes"]]
    assert kinds.count("conv") > 20 and kinds.count("add") >= 3 and kinds[-1] == "output"
    assert "blocks collapsed at module depth 2" in capsys.readouterr().out


def test_a_sensitivity_report_of_another_model_is_refused(tmp_path, capsys):
    report = tmp_path / "s.json"
    rows = [{"name": "features.3.conv.0.0", "kind": "conv", "only_this_quantized": 0.8, "all_but_this": 0.9,
             "sqnr_db": 20.0, "mse": 0.1, "cosine": 0.99}]
    report.write_text(json.dumps({"model": "mobilenet_v2", "eval_size": 100, "layers": rows}))
    assert main(["graph", "--model", "fm_resnet", "--calib-size", "8", "--sensitivity", str(report),
                 "--out", str(tmp_path / "x.html")]) == 2
    assert "is a layer of fm_resnet" in capsys.readouterr().err and not (tmp_path / "x.html").exists()
