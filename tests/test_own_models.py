"""Own models end to end (issue 14's "done when"): a .pt2, an .onnx and a timm state_dict go through
calibrate (CLI), sensitivity, real INT8 deploy and a few QAT steps, on an ImageNet-style folder of
mixed-size JPEGs and on a folder of unlabeled images."""

import copy
import json
import warnings

import pytest
import torch
import torchvision
from torch import nn

from qcore.cli import main
from qcore.analysis.sensitivity import prepare, sweep
from qcore.quant.qconfig import QuantConfig
from qcore.runtime.deploy import deploy
from qcore.train.qat import QATRecipe, run_qat
from tests.helpers import data_initialized, image_folder, train_briefly

pytestmark = pytest.mark.slow

SHAPE = (3, 224, 224)


def conv_linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("inet"), n_per_class=24)


@pytest.fixture(scope="module")
def files(tmp_path_factory, imagenet_dir):
    """mobilenet_v2 as .pt2 and .onnx, timm efficientnet_lite0 as a state_dict: random weights, data-initialized
    so that their predictions vary from image to image as a trained model's do."""
    import timm

    from qcore.zoo.data import load_image_folder
    from qcore.zoo.preprocess import preset

    x = preset("imagenet", SHAPE)(load_image_folder(imagenet_dir, 256).images[::2])
    root = tmp_path_factory.mktemp("own")
    torch.manual_seed(0)
    net = data_initialized(torchvision.models.mobilenet_v2(), x)
    x = torch.randn(2, *SHAPE)
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},)), root / "m.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x[:1],), root / "m.onnx", dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    lite = data_initialized(timm.create_model("efficientnet_lite0"), x)
    torch.save(lite.state_dict(), root / "lite0.pth")
    return {"pt2": (["--model", str(root / "m.pt2"), "--input-shape", "3,224,224", "--preprocess", "imagenet"],
                    conv_linear_names(net)),
            "onnx": (["--model", str(root / "m.onnx"), "--input-shape", "3,224,224", "--preprocess", "imagenet"],
                     conv_linear_names(net)),
            "timm": (["--model", str(root / "lite0.pth"), "--arch", "timm:efficientnet_lite0", "--preprocess", "timm"],
                     conv_linear_names(lite)),
            "root": root}


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "timm"])
def test_calibrate_cli_quantizes_every_layer_of_an_own_model(fmt, files, imagenet_dir, tmp_path, capsys):
    args, names = files[fmt]
    out = tmp_path / "r.json"
    assert main(["calibrate", *args, "--data", f"imagefolder:{imagenet_dir}", "--calib-size", "32", "--eval-size", "64",
                 "--methods", "max,mse", "--granularity", "tensor", "--weight-bits", "4", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    if fmt == "onnx":  # onnx2torch names layers after ONNX nodes; the count is the model's
        assert len(r["inventory"]["quantized_layers"]) == len(names)
    else:
        assert r["inventory"]["quantized_layers"] == names
    assert r["inventory"]["float_layers"] == [] and r["identity"]["scored_by"] == "labels" and r["eval_size"] == 64
    for row in r["methods"]:  # 4-bit per-tensor weights change the predictions: quantization happened
        assert row["agreement"] < 1.0 and row["logit_sqnr_db"] < 30
    assert f"{len(names)} layers quantized, 0 stay float" in capsys.readouterr().out


def test_graph_diagnose_and_whatif_on_the_command_line_with_an_own_224_pt2(files, imagenet_dir, tmp_path, capsys):
    """Issue 25's explorer commands on the 224x224 ImageNet-class .pt2 (mobilenet_v2), 16 images each: the graph
    has its layers and adds, the diagnosis splits weights and activations per layer, and a what-if clip of the
    classifier is measured and written into the edited config."""
    args, names = files["pt2"]
    common = [*args, "--data", f"imagefolder:{imagenet_dir}", "--calib-size", "16"]
    assert main(["graph", *common, "--out", str(tmp_path / "g.html"),
                 "--json", str(tmp_path / "g.json")]) == 0
    kinds = [n["kind"] for n in json.loads((tmp_path / "g.json").read_text())["nodes"]]
    assert kinds.count("conv") + kinds.count("linear") == len(names) and kinds.count("add") == 10
    assert main(["diagnose", *common, "--eval-size", "16", "--out", str(tmp_path / "d.json")]) == 0
    d = json.loads((tmp_path / "d.json").read_text())
    assert d["eval_size"] == 16 and {"weights_only_accuracy", "acts_only_accuracy", "causes"} <= set(d)
    assert {row["name"] for row in d["layers"]} >= set(names)
    assert main(["whatif", *common, "--eval-size", "16", "--layer", names[-1], "--clip=-1,1",
                 "--out", str(tmp_path / "w.json")]) == 0
    w = json.loads((tmp_path / "w.json").read_text())
    assert (w["after"]["clip_min"], w["after"]["clip_max"]) == (-1.0, 1.0) and w["after"]["eval_size"] == 16
    assert QuantConfig.from_dict(w["config"]).for_layer(names[-1]).act_clip == (-1.0, 1.0)
    capsys.readouterr()


@pytest.fixture(scope="module")
def trained_files(tmp_path_factory):
    """Trained weights in each format: the built-in fm_mobilenetv2 (ReLU6, depthwise, inverted residuals) as
    .pt2 and .onnx, and a timm resnet10t briefly trained on Fashion-MNIST as a state_dict."""
    import timm

    from qcore.zoo.models import load_model

    root = tmp_path_factory.mktemp("trained")
    net = copy.deepcopy(load_model("fm_mobilenetv2").module)
    x = torch.randn(2, 1, 28, 28)
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},)), root / "fm.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x[:1],), root / "fm.onnx", dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    torch.manual_seed(0)
    resnet = train_briefly(timm.create_model("resnet10t", in_chans=1, num_classes=10), steps=250)
    torch.save(resnet.state_dict(), root / "r10t.pth")
    fm = ["--input-shape", "1,28,28", "--preprocess", "custom", "--mean", "0.286", "--std", "0.353", "--resize", "28"]
    return {"pt2": [str(root / "fm.pt2"), *fm], "onnx": [str(root / "fm.onnx"), *fm],
            "timm": [str(root / "r10t.pth"), "--arch", "timm:resnet10t", *fm]}


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "timm"])
def test_an_own_model_deploys_to_int8_that_agrees_with_the_simulation(fmt, trained_files, tmp_path, capsys):
    out = tmp_path / "dep"
    assert main(["deploy", "--model", *trained_files[fmt], "--data", "fashion-mnist", "--eval-size", "1000",
                 "--calib-size", "256", "--iters", "3", "--batch", "8", "--out", str(out)]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["identity"]["scored_by"] == "labels" and r["fp32_accuracy"] > 0.6
    assert r["config"]["default"]["weight_granularity"] == "channel" and r["config"]["default"]["weight_bits"] == 8
    assert r["agreement_with_simulation"] >= 0.99, r["paths"][r["best_int8"]]
    assert len(r["inventory"]["quantized_layers"]) > 10 and r["inventory"]["float_layers"] == []
    assert "layers quantized, 0 stay float" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "timm"])
def test_sensitivity_and_qat_on_unlabeled_images(fmt, trained_files, tmp_path):
    """Plain images with no labels: scored by agreement with FP32, fine-tuned towards FP32's own top-1."""
    plain = image_folder(tmp_path / "plain", n_per_class=16, labeled=False)
    loaded = _load(trained_files[fmt])
    p = prepare(loaded, QuantConfig().with_default(weight_bits=4, weight_granularity="tensor"),
                f"imagefolder:{plain}", calib_size=32, eval_size=64)
    report = sweep(p)
    assert report.identity.scored_by == "fp32" and report.fp32_accuracy == 1.0 and report.base_accuracy <= 1.0
    assert min(r.sqnr_db for r in report.layers) < 30  # 4-bit per-tensor weights: quantization happened
    assert len(report.layers) == len(p.sim.points) and len(report.inventory.quantized_layers) == len(p.sim.weight_layers)
    qat = run_qat(loaded, QuantConfig().with_default(weight_bits=4), QATRecipe(steps=4, minutes=None, epochs=1,
                  batch_size=16, int8_each_epoch=False), f"imagefolder:{plain}", calib_size=32, eval_size=32,
                  final_eval_size=32, out_dir=tmp_path / "qat").report
    assert qat.identity.scored_by == "fp32" and qat.fp32_accuracy == 1.0 and qat.steps == 4
    assert 0.0 <= qat.qat_accuracy <= 1.0 and qat.inventory.quantized_layers == report.inventory.quantized_layers


def _load(args: list[str]):
    from qcore.cli import build_parser
    from qcore.cli.options import model_arg as _model

    return _model(build_parser().parse_args(["evaluate", "--model", *args]))
