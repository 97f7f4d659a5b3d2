"""Own model files in every format are loaded as real, quantizable layers, or refused with a one-line reason."""

import warnings

import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto, helper
from torch import nn

from qcore.quant.quantsim import QuantSim
from qcore.zoo.models import ModelUnavailable
from qcore.zoo.user_models import load_user_model
from tests.helpers import randomized

SHAPE = (3, 64, 64)


def weight_layer_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    return randomized(torchvision.models.mobilenet_v2(num_classes=10))


def export_pt2(model, path, dynamic=True):
    x = torch.randn(2, *SHAPE)
    shapes = ({0: torch.export.Dim.AUTO},) if dynamic else None
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), path)
    return path


def export_onnx(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, *SHAPE),), path, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    return path


def test_a_torch_export_program_is_lifted_to_the_layers_it_came_from(mobilenet, tmp_path):
    loaded = load_user_model(export_pt2(mobilenet, tmp_path / "m.pt2"), input_shape=SHAPE, preprocess="imagenet")
    x = torch.randn(3, *SHAPE)  # neither of the export's batch sizes
    torch.testing.assert_close(loaded.module(x), mobilenet(x), rtol=1e-4, atol=1e-5)
    sim = QuantSim(loaded.module)
    assert list(sim.weight_layers) == weight_layer_names(mobilenet)  # every conv and linear, by its own name
    assert len(sim.folded_bn) == 52  # batch norms are modules again, folded like any other
    assert sim.layer_inventory().float_layers == ()
    assert loaded.info["format"] == "pt2" and loaded.spec.preprocess.name == "imagenet"


def test_an_onnx_file_is_converted_to_quantizable_layers(mobilenet, tmp_path):
    loaded = load_user_model(export_onnx(mobilenet, tmp_path / "m.onnx"), input_shape=SHAPE)
    x = torch.randn(2, *SHAPE)
    torch.testing.assert_close(loaded.module(x), mobilenet(x), rtol=1e-4, atol=1e-4)
    sim = QuantSim(loaded.module)
    assert len(sim.weight_layers) == len(weight_layer_names(mobilenet))
    assert sum(p.kind == "add" for p in sim.points) == 10  # residual adds recognised (onnx Add -> operator.add)
    assert loaded.spec.preprocess.name == "imagenet"  # the default for an RGB model without an architecture


def test_a_timm_state_dict_gets_timm_preprocessing_and_real_layers(tmp_path):
    import timm

    net = timm.create_model("efficientnet_lite0", num_classes=5).eval()
    torch.save(net.state_dict(), tmp_path / "lite0.pth")
    loaded = load_user_model(tmp_path / "lite0.pth", arch="timm:efficientnet_lite0")
    pre = loaded.spec.preprocess
    assert (pre.name, pre.resize, pre.crop, pre.interpolation) == ("timm", 256, 224, "bicubic")
    assert len(loaded.spec.class_names) == 5 and loaded.spec.input_shape == (3, 224, 224)
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(loaded.module(x), net(x), rtol=1e-4, atol=1e-4)
    assert len(QuantSim(loaded.module).weight_layers) == len(weight_layer_names(net))
    with pytest.raises(ModelUnavailable, match="timm has no architecture 'efficientnet_nope'"):
        load_user_model(tmp_path / "lite0.pth", arch="timm:efficientnet_nope")


def test_a_1000_class_model_gets_imagenet_names(tmp_path):
    net = randomized(torchvision.models.mobilenet_v2())
    loaded = load_user_model(export_pt2(net, tmp_path / "in.pt2"), input_shape=SHAPE)
    assert loaded.spec.dataset == "imagenet" and loaded.spec.class_names[0] == "tench"


class FlattenByView(nn.Module):
    """`x.view(x.shape[0], -1)`: exported with a static batch, the batch size is baked into the graph."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 62 * 62, 10)

    def forward(self, x):
        return self.fc(self.conv(x).view(x.shape[0], -1))


def test_a_static_batch_program_runs_at_any_batch_or_is_told_to_export_a_dynamic_one(mobilenet, tmp_path):
    export_pt2(mobilenet, tmp_path / "static.pt2", dynamic=False)
    loaded = load_user_model(tmp_path / "static.pt2", input_shape=SHAPE)  # nothing batch-specific survives lifting
    x = torch.randn(5, *SHAPE)
    torch.testing.assert_close(loaded.module(x), mobilenet(x), rtol=1e-4, atol=1e-5)
    export_pt2(FlattenByView().eval(), tmp_path / "baked.pt2", dynamic=False)
    with pytest.raises(ModelUnavailable, match="dynamic batch"):
        load_user_model(tmp_path / "baked.pt2", input_shape=SHAPE)


def test_bad_uploads_get_one_line_reasons(mobilenet, tmp_path):
    torch.jit.save(torch.jit.trace(mobilenet, torch.randn(1, *SHAPE)), tmp_path / "m.ts")
    with pytest.raises(ModelUnavailable, match="TorchScript.*torch.export"):
        load_user_model(tmp_path / "m.ts", input_shape=SHAPE)
    export_pt2(mobilenet, tmp_path / "m.pt2")
    with pytest.raises(ModelUnavailable, match="failed on a batch-1 \\(1, 5, 5\\)"):
        load_user_model(tmp_path / "m.pt2", input_shape=(1, 5, 5))
    free = torch.export.export(mobilenet, (torch.randn(2, *SHAPE),), dynamic_shapes=(
        {0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},))
    torch.export.save(free, tmp_path / "any_size.pt2")
    with pytest.raises(ModelUnavailable, match="input size is not fixed in it: give its input shape"):
        load_user_model(tmp_path / "any_size.pt2")
    with pytest.raises(ModelUnavailable, match="preprocessing: mean and std need 3 values"):
        load_user_model(tmp_path / "m.pt2", input_shape=SHAPE, preprocess="custom",
                        preprocess_overrides={"mean": (0.5,), "std": (0.5,)})


def test_the_input_shape_a_pt2_or_onnx_file_fixes_is_read_from_it(mobilenet, tmp_path):
    for path in (export_pt2(mobilenet, tmp_path / "m.pt2"), export_onnx(mobilenet, tmp_path / "m.onnx")):
        loaded = load_user_model(path)  # no shape given: the file's own (C, H, W), the batch left dynamic
        assert loaded.spec.input_shape == SHAPE
        assert loaded.spec.preprocess.crop == SHAPE[1]  # ImageNet preprocessing sized to the model's input
    other = load_user_model(tmp_path / "m.pt2", input_shape=(3, 96, 96))  # a given shape still wins
    assert other.spec.input_shape == (3, 96, 96)


def test_an_onnx_operator_onnx2torch_cannot_convert_is_named(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "det.onnx")
    with pytest.raises(ModelUnavailable, match="cannot convert to torch: Det \\(opset 17, node .#0.\\)"):
        load_user_model(tmp_path / "det.onnx", input_shape=(1, 2, 2))
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelUnavailable, match="not a valid ONNX model"):
        load_user_model(tmp_path / "junk.onnx", input_shape=(1, 2, 2))


def test_a_model_without_quantizable_layers_is_refused(tmp_path):
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    export_pt2(net, tmp_path / "pool.pt2")
    with pytest.raises(ModelUnavailable, match="no Conv2d or Linear layer"):
        load_user_model(tmp_path / "pool.pt2", input_shape=SHAPE)


def test_an_experiment_that_quantizes_nothing_is_an_error_and_the_cli_says_so_in_one_line(mobilenet, tmp_path, capsys):
    from qcore.cli import main
    from qcore.quant.qconfig import QuantConfig
    from qcore.quant.quantsim import NothingQuantized

    sim = QuantSim(mobilenet, QuantConfig().with_default(enabled=False))
    with pytest.raises(NothingQuantized, match="quantizes no layer"):
        sim.layer_inventory()
    torch.jit.save(torch.jit.trace(mobilenet, torch.randn(1, *SHAPE)), tmp_path / "m.ts")
    capsys.readouterr()  # torch.jit.trace's own deprecation warning (printed once per process) is not the CLI's
    assert main(["calibrate", "--model", str(tmp_path / "m.ts"), "--input-shape", "3,64,64", "--eval-size", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: m.ts is TorchScript") and err.count("\n") == 1 and "Traceback" not in err
    assert main(["calibrate", "--model", "fm_resnet", "--arch", "timm:resnet18", "--eval-size", "8"]) == 2
    assert "apply to a model file" in capsys.readouterr().err


def test_a_pt2_with_pickled_objects_is_refused_and_loading_stays_weights_only(mobilenet, tmp_path):
    import os
    import zipfile

    from torch.export.pt2_archive.constants import OPAQUE_OBJ_FILENAME_PREFIX

    good = export_pt2(mobilenet, tmp_path / "m.pt2")
    bad = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr(f"m/data/constants/{OPAQUE_OBJ_FILENAME_PREFIX}0", b"\x80\x04not even a valid pickle")
    with pytest.raises(ModelUnavailable, match="pickled Python objects"):
        load_user_model(bad, input_shape=SHAPE)
    load_user_model(good, input_shape=SHAPE)
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # the switch is put back after the load
