"""Single images in and out of a model: decode an uploaded picture at the model's input size,
classify it, and turn a CxHxW tensor back into an array a page can show.

The dataset loaders (qcore.zoo.data) read whole folders and skip bad files; here one picture is
the whole input, so an unreadable one is a ValueError with the file's name in the message.
"""

from __future__ import annotations

import numpy as np
import torch

from qcore.zoo.data import decode_image
from qcore.zoo.models import LoadedModel
from qcore.zoo.preprocess import Preprocess

__all__ = ["load_image_tensor", "top_classes", "classify_image", "display_array"]


def load_image_tensor(file_like, input_shape: tuple[int, int, int], preprocess: Preprocess | None = None) -> torch.Tensor:
    """The picture as a 1xCxHxW uint8 tensor. With a cropping `preprocess` (ImageNet-style models) it is
    decoded as the datasets are (short side to the resize, centre square; the model crops); otherwise
    greyscale for 1-channel models, else RGB, resized (not cropped) to HxW. `file_like` is a path or a
    binary file object (e.g. an upload). Raises ValueError when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    channels, h, w = input_shape
    try:
        if preprocess is not None and preprocess.crop:
            return decode_image(file_like, preprocess.decode_size(input_shape), preprocess.interpolation)[None]
        with Image.open(file_like) as im:
            im = im.convert("L" if channels == 1 else "RGB").resize((w, h))
            arr = torch.from_numpy(np.asarray(im).copy())
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        name = getattr(file_like, "name", None) or str(file_like)
        raise ValueError(f"{name}: not a readable image") from exc
    return arr[None, None] if arr.dim() == 2 else arr.permute(2, 0, 1)[None]


def top_classes(loaded: LoadedModel, x: torch.Tensor, k: int = 3) -> list[tuple[str, float]]:
    """The model's k most likely classes for one image batch `x` (1xCxHxW, raw pixels), with
    their softmax probabilities, most likely first."""
    with torch.no_grad():
        probs = torch.softmax(loaded.module(loaded.spec.preprocess(x)), 1)[0]
    top = probs.topk(min(k, len(probs)))
    names = loaded.spec.class_names
    return [(names[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist())]


def classify_image(loaded: LoadedModel, file_like, k: int = 3) -> list[tuple[str, float]]:
    """Decode `file_like` at the model's input size and return its top-k (class, probability);
    raises ValueError when it is not a readable image."""
    return top_classes(loaded, load_image_tensor(file_like, loaded.spec.input_shape, loaded.spec.preprocess), k)


def display_array(image: torch.Tensor) -> np.ndarray:
    """A CxHxW image tensor as an array for display: HxW for greyscale, HxWxC for colour."""
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
