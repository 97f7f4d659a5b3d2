"""Single uploaded images: decoded at the model's input size, classified, shown; bad files refused."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from qcore.zoo.images import classify_image, display_array, load_image_tensor, top_classes
from tests.helpers import tiny_fashion_model


@pytest.fixture(scope="module")
def tiny():
    return tiny_fashion_model()


def png(path, size=(40, 30), color=(10, 200, 30)):
    Image.new("RGB", size, color).save(path, format="PNG")
    return path


def test_rgb_png_becomes_a_greyscale_tensor_at_the_input_size(tmp_path):
    x = load_image_tensor(png(tmp_path / "a.png"), (1, 28, 28))
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.uint8
    grey = round(0.299 * 10 + 0.587 * 200 + 0.114 * 30)  # PIL's "L" conversion of a solid colour
    assert abs(int(x[0, 0, 5, 5]) - grey) <= 1 and int(x.min()) == int(x.max())


def test_colour_models_get_rgb_channels_first(tmp_path):
    x = load_image_tensor(png(tmp_path / "a.png"), (3, 16, 24))
    assert x.shape == (1, 3, 16, 24)
    assert x[0, :, 0, 0].tolist() == [10, 200, 30]


def test_classify_image_gives_the_top_k_classes_with_probabilities(tiny, tmp_path):
    path = tmp_path / "shirt.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(path)
    top = classify_image(tiny, path, k=3)
    assert len(top) == 3
    names, probs = zip(*top)
    assert set(names) <= set(tiny.spec.class_names)
    assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0 + 1e-6
    assert list(probs) == sorted(probs, reverse=True)
    x = load_image_tensor(path, tiny.spec.input_shape)
    with torch.no_grad():
        best = int(tiny.module(tiny.spec.preprocess(x)).argmax(1))
    assert names[0] == tiny.spec.class_names[best]


def test_k_beyond_the_class_count_gives_every_class(tiny, tmp_path):
    top = top_classes(tiny, load_image_tensor(png(tmp_path / "a.png"), (1, 28, 28)), k=50)
    assert len(top) == len(tiny.spec.class_names) and sum(p for _, p in top) == pytest.approx(1.0, abs=1e-5)


def test_garbage_file_is_a_value_error_naming_it(tiny, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image at all")
    with pytest.raises(ValueError, match="junk.png: not a readable image"):
        classify_image(tiny, junk)


def test_truncated_upload_is_a_value_error(tiny, tmp_path):
    data = (png(tmp_path / "a.png", size=(200, 200))).read_bytes()
    upload = io.BytesIO(data[: len(data) // 2])
    upload.name = "half.png"
    with pytest.raises(ValueError, match="half.png"):
        classify_image(tiny, upload)


def test_display_array_is_hw_for_grey_and_hwc_for_colour():
    assert display_array(torch.zeros(1, 5, 7, dtype=torch.uint8)).shape == (5, 7)
    rgb = torch.arange(3 * 2 * 4, dtype=torch.uint8).reshape(3, 2, 4)
    out = display_array(rgb)
    assert out.shape == (2, 4, 3) and out[1, 2, 0] == rgb[0, 1, 2]
