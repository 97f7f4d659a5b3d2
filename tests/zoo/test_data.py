import pickle
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from qcore.zoo import data
from qcore.zoo.data import DataUnavailable, ImageSet, load_fashion_mnist, load_image_folder, read_idx, subset


def test_read_idx_round_trip(tmp_path):
    from tests.conftest import write_idx

    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), arr)


def test_read_idx_rejects_junk_and_truncation(tmp_path):
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "junk")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_from_data_dir(tiny_fashion_mnist):
    _, arrays = tiny_fashion_mnist
    test = load_fashion_mnist("test")
    assert test.images.shape == (20, 1, 28, 28) and test.images.dtype == torch.uint8
    np.testing.assert_array_equal(test.images[:, 0].numpy(), arrays["test"][0])
    assert test.labels.tolist() == arrays["test"][1].tolist()
    assert test.class_names[0] == "T-shirt/top" and len(test.class_names) == 10


def test_fashion_mnist_missing_offline_names_every_option(tmp_path, monkeypatch):
    monkeypatch.setenv("QX_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    data._FM_CACHE.clear()

    def offline(*args, **kwargs):
        raise URLError("no network")

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", offline)
    with pytest.raises(DataUnavailable) as err:
        load_fashion_mnist("test")
    msg = str(err.value)
    assert "dataset-fashion-mnist" in msg and "QX_DATA_DIR" in msg and "URLError" in msg
    with pytest.raises(DataUnavailable, match="Looked in"):
        load_fashion_mnist("test", download=False)


def test_subsets_are_deterministic_and_sized(tiny_fashion_mnist):
    train = load_fashion_mnist("train")
    a, b, c = subset(train, 10, seed=1), subset(train, 10, seed=1), subset(train, 10, seed=2)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert len(a) == 10 and subset(train, None) is train and subset(train, 10_000) is train
    with pytest.raises(ValueError):
        subset(train, 0)


def test_calibration_comes_from_train_and_eval_from_test(tiny_fashion_mnist):
    _, arrays = tiny_fashion_mnist
    calib = data.calibration_subset("fashion-mnist", 5, seed=0)
    ev = data.eval_subset("fashion-mnist", 5, seed=0)
    train_rows = {arr.tobytes() for arr in arrays["train"][0]}
    assert all(img[0].numpy().tobytes() in train_rows for img in calib.images)
    assert not any(img[0].numpy().tobytes() in train_rows for img in ev.images)


def test_imageset_validates_shapes():
    with pytest.raises(ValueError):
        ImageSet("x", torch.zeros(2, 28, 28, dtype=torch.uint8), torch.zeros(2), ())
    with pytest.raises(ValueError):
        ImageSet("x", torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.zeros(3), ())


def _save(path, size=(300, 260), mode="RGB", color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else 128).save(path)


def test_image_folder_with_synset_names_maps_to_imagenet_indices(tmp_path):
    _save(tmp_path / "n01440764" / "a.jpg")  # tench: ImageNet class 0
    _save(tmp_path / "n15075141" / "b.png", mode="L")  # toilet tissue: class 999, grayscale file
    (tmp_path / "n15075141" / "notes.txt").write_text("not an image")
    ds = load_image_folder(tmp_path)
    assert ds.labels.tolist() == [0, 999]
    assert ds.images.shape == (2, 3, 256, 256)
    assert len(ds.class_names) == 1000 and ds.class_names[0] == "n01440764"


def test_image_folder_with_plain_names_and_a_corrupt_file(tmp_path):
    _save(tmp_path / "cats" / "1.jpg", size=(40, 90))
    _save(tmp_path / "dogs" / "1.jpg")
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    ds = load_image_folder(tmp_path, size=32)
    assert ds.class_names == ("cats", "dogs") and ds.labels.tolist() == [0, 1]
    assert ds.images.shape == (2, 3, 32, 32)


def test_a_folder_of_plain_images_is_unlabeled_and_decoded_at_the_given_size(tmp_path):
    """Most users have images but no labels: such a folder loads with labels -1 (scored by FP32 agreement),
    each image resized on its short side and centre-cropped, whatever its size."""
    _save(tmp_path / "wide.jpg", size=(300, 200), color=(200, 10, 10))
    _save(tmp_path / "tall.png", size=(120, 260), color=(10, 200, 10))
    ds = load_image_folder(tmp_path, size=64, interpolation="bicubic")
    assert ds.images.shape == (2, 3, 64, 64) and ds.labels.tolist() == [-1, -1]
    assert not ds.labeled and ds.class_names == ()
    assert ds.images[0, 1].float().mean() > 150 and ds.images[0, 0].float().mean() < 50  # tall.png sorts first: green
    assert ds.images[1, 0].float().mean() > 150 and ds.images[1, 1].float().mean() < 50  # wide.jpg: red


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataUnavailable, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(DataUnavailable, match="no readable images"):
        load_image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataUnavailable, match="no readable images"):
        load_image_folder(tmp_path)


def test_cifar10_from_a_local_root(tmp_path, monkeypatch):
    """The real torchvision reader over CIFAR-10's python batches (tiny stand-ins here)."""
    import torchvision.datasets

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in ["data_batch_%d" % i for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 9]}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(data.CIFAR10_CLASSES)}, f)
    # our stand-in batches cannot have CIFAR-10's md5 sums; everything else is the real reader
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    ds = data.load_cifar10("test", root=tmp_path)
    assert ds.images.shape == (4, 3, 32, 32) and ds.labels.tolist() == [0, 1, 2, 9]


def test_cifar10_offline_gives_a_clear_message(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(self):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(DataUnavailable, match="could not be downloaded"):
        data.load_cifar10("test", root=tmp_path)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="Unknown dataset"):
        data.load_dataset("mnist-but-not")


def _zip(path, files: dict):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _png_bytes():
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def test_image_archive_is_unpacked_and_looked_through(tmp_path):
    png = _png_bytes()
    archive = _zip(tmp_path / "photos.zip", {"photos/cat/1.png": png, "photos/dog/1.png": png})
    root = data.extract_image_archive(archive, tmp_path / "out")
    assert sorted(p.name for p in root.iterdir()) == ["cat", "dog"]
    assert load_image_folder(root, size=8).class_names == ("cat", "dog")


def test_zip_slip_and_oversized_archives_are_refused(tmp_path):
    evil = _zip(tmp_path / "evil.zip", {"../escape.png": b"x"})
    with pytest.raises(DataUnavailable, match="unsafe path"):
        data.extract_image_archive(evil, tmp_path / "out")
    assert not (tmp_path / "escape.png").exists()
    big = _zip(tmp_path / "big.zip", {"a/b.png": b"\0" * (2 * 2**20)})
    with pytest.raises(DataUnavailable, match="limit is 1 MB"):
        data.extract_image_archive(big, tmp_path / "out2", max_mb=1)
    (tmp_path / "not.zip").write_bytes(b"plain")
    with pytest.raises(DataUnavailable, match="not a .zip"):
        data.extract_image_archive(tmp_path / "not.zip", tmp_path / "out3")
