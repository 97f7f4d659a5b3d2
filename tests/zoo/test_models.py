import os
from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn

from qcore.zoo import models
from qcore.zoo.models import ModelUnavailable, load_model
from qcore.zoo.user_models import load_user_model


def test_registry_lists_builtins_first_then_torchvision():
    specs = models.list_models()
    names = [s.name for s in specs]
    assert names[0] == models.DEFAULT_MODEL
    assert {"fm_resnet", "fm_mobilenetv2", "fm_gelunet"} <= set(names)
    assert {"resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
            "shufflenet_v2_x1_0", "regnet_x_400mf"} <= set(names)
    for s in specs:
        assert s.input_shape[0] in (1, 3) and s.class_names and s.weight_source
    assert models.get_spec("resnet18").class_names[0] == "tench"


def test_unknown_model():
    with pytest.raises(ValueError, match="Unknown model"):
        models.get_spec("resnet9000")


def test_count_macs_on_a_known_layer():
    assert models.count_macs(nn.Conv2d(3, 8, 3, padding=1), (3, 10, 10)) == 10 * 10 * 8 * 3 * 9
    assert models.count_macs(nn.Linear(5, 7), (5,)) == 35


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.setenv("QX_DATA_DIR", str(tmp_path / "data"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


def test_torchvision_weights_from_the_hub_cache(hub_dir):
    torch.manual_seed(0)
    ref = torchvision.models.get_model("shufflenet_v2_x1_0", weights=None).eval()
    path = models.torchvision_weight_paths("shufflenet_v2_x1_0")[0]
    assert path.parent == hub_dir / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    loaded = load_model("shufflenet_v2_x1_0", download=False)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), ref(x))
    assert loaded.params == sum(p.numel() for p in ref.parameters())
    assert 100e6 < loaded.macs < 200e6  # torchvision lists 0.14 GFLOPs (MACs) for it
    assert not any(p.requires_grad for p in loaded.module.parameters()) and not loaded.module.training


def test_torchvision_offline_without_cache_is_a_clear_message(hub_dir, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("network unreachable")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(ModelUnavailable) as err:
        load_model("resnet18")
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and "URLError" in msg and "--weights" in msg
    with pytest.raises(ModelUnavailable, match="cannot be downloaded offline"):
        load_model("resnet18", download=False)


def test_torchvision_weights_from_an_explicit_file(tmp_path):
    torch.manual_seed(1)
    ref = torchvision.models.get_model("shufflenet_v2_x1_0", weights=None)
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "mine.pth")
    loaded = load_model("shufflenet_v2_x1_0", weights=tmp_path / "mine.pth")
    assert torch.equal(loaded.module.fc.weight, ref.fc.weight)
    with pytest.raises(ModelUnavailable, match="does not exist"):
        load_model("shufflenet_v2_x1_0", weights=tmp_path / "nope.pth")


def test_wrong_weights_for_the_architecture(tmp_path):
    torch.save(nn.Linear(3, 4).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(ModelUnavailable, match="does not match"):
        load_model("shufflenet_v2_x1_0", weights=tmp_path / "linear.pt")


class Boom:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('QX_BOOM_MARKER', '/tmp/qx-boom')}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("QX_BOOM_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": Boom()}, path)
    with pytest.raises(ModelUnavailable, match="cannot be loaded safely"):
        load_user_model(path, arch="fm_gelunet")
    assert not marker.exists()


def test_user_state_dict_with_a_different_class_count(tmp_path):
    net = models.BUILTIN["fm_gelunet"].build()
    net.fc = nn.Linear(net.fc.in_features, 4)
    torch.save(net.state_dict(), tmp_path / "four.pt")
    loaded = load_user_model(tmp_path / "four.pt", arch="fm_gelunet")
    assert loaded.spec.family == "user" and len(loaded.spec.class_names) == 4
    assert loaded.spec.dataset == "user"
    with pytest.raises(ModelUnavailable, match="choose the architecture"):
        load_user_model(tmp_path / "four.pt")


def test_user_file_size_limit_and_junk(tmp_path):
    (tmp_path / "big.pt").write_bytes(b"\0" * (2 * 2**20))
    with pytest.raises(ModelUnavailable, match="limit is 1 MB"):
        load_user_model(tmp_path / "big.pt", arch="fm_gelunet", max_mb=1)
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelUnavailable, match="cannot be loaded safely"):
        load_user_model(tmp_path / "junk.pt", arch="fm_gelunet")
    with pytest.raises(ModelUnavailable, match="does not exist"):
        load_user_model(tmp_path / "missing.pt", arch="fm_gelunet")


def test_missing_builtin_checkpoint_says_how_to_rebuild(tmp_path):
    with pytest.raises(ModelUnavailable, match="python -m qcore train fm_resnet"):
        load_model("fm_resnet", weights=tmp_path / "gone.pt")
