"""Datasets: Fashion-MNIST (offline default), CIFAR-10, and the user's own ImageFolder.

Every dataset is turned into one in-memory shape, `ImageSet`: uint8 images (N, C, H, W) plus
int64 labels and class names. Keeping raw uint8 pixels (not model-ready tensors) lets each model
apply its own preprocessing, and keeps 60k Fashion-MNIST images at 47 MB.

Subsets are chosen by size and seed so every page, CLI call and test sees the same images:
calibration images come from the train split, evaluation images from the test split.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DataUnavailable",
    "ImageSet",
    "FASHION_MNIST_CLASSES",
    "fashion_mnist_dirs",
    "read_idx",
    "load_fashion_mnist",
    "load_cifar10",
    "load_image_folder",
    "decode_image",
    "load_dataset",
    "subset",
    "calibration_subset",
    "eval_subset",
    "DATASETS",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FM_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DATASETS = ("fashion-mnist", "cifar10", "imagefolder:PATH")


class DataUnavailable(RuntimeError):
    """The dataset cannot be found locally and cannot be downloaded; the message says what to do."""


@dataclass(frozen=True)
class ImageSet:
    """Raw images (uint8, N x C x H x W), integer labels, and the names of the label indices."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("ImageSet.images must be a uint8 tensor of shape (N, C, H, W)")
        if len(self.images) != len(self.labels):
            raise ValueError("ImageSet needs as many labels as images")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def labeled(self) -> bool:
        """Whether every image has a class (a folder of plain images has none: labels are -1)."""
        return bool(self.class_names) and bool((self.labels >= 0).all())


def data_dir() -> Path:
    """The project's data directory: $QX_DATA_DIR, else ./data."""
    return Path(os.environ.get("QX_DATA_DIR", "data"))


def fashion_mnist_dirs() -> list[Path]:
    """Where the Fashion-MNIST idx .gz files are looked for, in order."""
    dirs = []
    if os.environ.get("QX_DATA_DIR"):
        dirs += [Path(os.environ["QX_DATA_DIR"]), Path(os.environ["QX_DATA_DIR"]) / "fashion-mnist"]
    dirs += [Path("data"), Path("data") / "fashion-mnist", DEBIAN_FASHION_MNIST]
    return dirs


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): the format MNIST and Fashion-MNIST ship in."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise ValueError(f"{path}: only unsigned-byte IDX files are supported")
    dims = struct.unpack(">" + "I" * ndim, raw[4: 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} values, got {data.size}")
    return data.reshape(dims)


def _find_fashion_mnist(split: str) -> tuple[Path, Path] | None:
    img_name, lbl_name = _FM_FILES[split]
    for d in fashion_mnist_dirs():
        for sub in (d, d / "FashionMNIST" / "raw"):
            if (sub / img_name).is_file() and (sub / lbl_name).is_file():
                return sub / img_name, sub / lbl_name
    return None


def _download_fashion_mnist(root: Path) -> None:
    """Online fallback: torchvision's downloader, into root/FashionMNIST/raw."""
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except Exception as exc:  # URLError, timeouts, checksum errors: all mean "not available"
        raise DataUnavailable(
            "Fashion-MNIST was not found and could not be downloaded "
            f"({type(exc).__name__}: {exc}). Put the four idx .gz files in $QX_DATA_DIR or ./data, "
            "or install the Debian package: sudo apt-get install dataset-fashion-mnist "
            f"(files in {DEBIAN_FASHION_MNIST})."
        ) from exc


_FM_CACHE: dict[str, ImageSet] = {}


def load_fashion_mnist(split: str = "test", download: bool = True) -> ImageSet:
    """Fashion-MNIST as an ImageSet; looked up locally first, downloaded only as a last resort."""
    if split not in _FM_FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    found = _find_fashion_mnist(split)
    if found is None:
        if not download:
            raise DataUnavailable(
                "Fashion-MNIST was not found. Looked in: "
                + ", ".join(str(d) for d in fashion_mnist_dirs())
                + ". Install it with `sudo apt-get install dataset-fashion-mnist`, or set QX_DATA_DIR."
            )
        _download_fashion_mnist(data_dir())
        found = _find_fashion_mnist(split)
        if found is None:
            raise DataUnavailable("Fashion-MNIST download finished but its files were not found")
    key = str(found[0])
    if key not in _FM_CACHE:
        images = read_idx(found[0])
        labels = read_idx(found[1])
        _FM_CACHE[key] = ImageSet(
            name="fashion-mnist",
            images=torch.from_numpy(images.copy()).unsqueeze(1),
            labels=torch.from_numpy(labels.astype(np.int64)),
            class_names=FASHION_MNIST_CLASSES,
        )
    return _FM_CACHE[key]


def load_cifar10(split: str = "test", root: str | Path | None = None, download: bool = True) -> ImageSet:
    """CIFAR-10 through torchvision: a local root (the python-pickle batches), else a download."""
    from torchvision.datasets import CIFAR10

    root = Path(root) if root is not None else data_dir()
    try:
        ds = CIFAR10(str(root), train=(split == "train"), download=False)
    except RuntimeError:
        if not download:
            raise DataUnavailable(f"CIFAR-10 was not found under {root}/cifar-10-batches-py") from None
        try:
            ds = CIFAR10(str(root), train=(split == "train"), download=True)
        except Exception as exc:
            raise DataUnavailable(
                f"CIFAR-10 was not found under {root}/cifar-10-batches-py and could not be downloaded "
                f"({type(exc).__name__}). Offline, copy the extracted 'cifar-10-batches-py' folder there."
            ) from exc
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return ImageSet("cifar10", images, torch.tensor(ds.targets, dtype=torch.int64), CIFAR10_CLASSES)


def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet synset ids in class-index order (sorted), shipped in assets/."""
    path = Path(__file__).resolve().parents[2] / "assets" / "imagenet_wnids.txt"
    return tuple(path.read_text().split())


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def decode_image(path, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """One image file as uint8 (3, size, size): short side resized to `size`, centre square kept."""
    from PIL import Image

    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[interpolation]
    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = size / min(im.size)
        im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))), resample)
        left, top = (im.width - size) // 2, (im.height - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)


def _folder_classes(class_dirs: list[Path]) -> tuple[dict[str, int], tuple[str, ...]]:
    """Synset-named folders get ImageNet indices; others are numbered in sorted order (torchvision's way)."""
    wnids = imagenet_wnids()
    synset = {w: i for i, w in enumerate(wnids)}
    if all(d.name in synset for d in class_dirs):
        return {d.name: synset[d.name] for d in class_dirs}, wnids
    return {d.name: i for i, d in enumerate(class_dirs)}, tuple(d.name for d in class_dirs)


def load_image_folder(path: str | Path, size: int = 256, max_images: int | None = None,
                      interpolation: str = "bilinear") -> ImageSet:
    """The user's images, decoded to RGB, resized on the short side to `size` and centre-cropped square.

    With one sub-folder per class, folders named by ImageNet synset ids (n01440764, ...) get ImageNet
    class indices, so an ImageNet-val or Imagenette folder evaluates ImageNet models correctly; other
    classes are numbered in sorted folder order, as torchvision's ImageFolder does. A folder of plain
    images (no class sub-folders) is unlabeled: its labels are -1, and experiments score it by
    agreement with FP32 instead of accuracy. `size` is the model's decode size (its preprocessing's
    resize); each model crops to its input in its own preprocessing.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise DataUnavailable(f"Image folder {root} does not exist")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if class_dirs:
        index_of, class_names = _folder_classes(class_dirs)
        files = [(f, index_of[d.name]) for d in class_dirs for f in _image_files(d)]
    else:
        class_names, files = (), [(f, -1) for f in _image_files(root)]
    files = files[:max_images] if max_images else files
    # decoded straight into one uint8 tensor: a list of images stacked at the end would hold them twice
    images, labels, bad = torch.empty(len(files), 3, size, size, dtype=torch.uint8), [], []
    for f, label in files:
        try:
            images[len(labels)] = decode_image(f, size, interpolation)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            bad.append(f.name)
            continue
        labels.append(label)
    if not labels:
        raise DataUnavailable(
            f"{root} has no readable images ({', '.join(IMAGE_EXTENSIONS)}), neither in class sub-folders nor at its top"
            + (f"; unreadable: {', '.join(bad[:5])}" if bad else "")
        )
    return ImageSet(f"imagefolder:{root}", images[: len(labels)].clone() if bad else images,
                    torch.tensor(labels, dtype=torch.int64), class_names)


_FOLDER_CACHE: dict[tuple, ImageSet] = {}


def load_dataset(name: str, split: str = "test", decode: tuple[int, str] | None = None) -> ImageSet:
    """Load a dataset by name: 'fashion-mnist', 'cifar10' or 'imagefolder:PATH'. `decode` is
    (size, interpolation) for image files: the model's preprocessing decides it."""
    if name in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return load_fashion_mnist(split)
    if name == "cifar10":
        return load_cifar10(split)
    if name.startswith("imagefolder:"):
        # A user's folder has no train/test split: calibration and evaluation share it.
        size, interpolation = decode or (256, "bilinear")
        key = (name, size, interpolation)
        found = _FOLDER_CACHE.get(key)
        if found is None:  # decoded once per model decode size (calibration and evaluation share the folder)
            found = load_image_folder(name.split(":", 1)[1], size, interpolation=interpolation)
            if len(_FOLDER_CACHE) >= 4:
                _FOLDER_CACHE.clear()
            _FOLDER_CACHE[key] = found
        return found
    raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def subset(ds: ImageSet, size: int | None, seed: int = 0) -> ImageSet:
    """A deterministic random subset of `size` images (all of them when size is None or larger)."""
    if size is None or size >= len(ds):
        return ds
    if size <= 0:
        raise ValueError("subset size must be positive")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:size].sort().values
    return ImageSet(ds.name, ds.images[idx], ds.labels[idx], ds.class_names)


def calibration_subset(name: str, size: int, seed: int = 0, decode: tuple[int, str] | None = None) -> ImageSet:
    """Calibration images: from the train split, so evaluation never sees them."""
    if size is not None and size < 1:
        raise ValueError(f"calibration needs at least one image, not {size}")
    return subset(load_dataset(name, "train", decode), size, seed)


def eval_subset(name: str, size: int | None, seed: int = 0, decode: tuple[int, str] | None = None) -> ImageSet:
    """Evaluation images: from the test split."""
    if size is not None and size < 1:
        raise ValueError(f"evaluation needs at least one image, not {size}")
    return subset(load_dataset(name, "test", decode), size, seed)


MAX_ARCHIVE_MB = float(os.environ.get("QX_MAX_ARCHIVE_MB", "1024"))


def extract_image_archive(archive: str | Path, dest: str | Path, max_mb: float = MAX_ARCHIVE_MB) -> Path:
    """Safely unpack a .zip of class folders and return the folder that holds the class folders.

    Refuses absolute paths and '..' (zip-slip), and archives that would unpack to more than
    `max_mb`. A single top-level folder (photos.zip -> photos/cat, photos/dog) is looked through.
    """
    import zipfile

    archive, dest = Path(archive), Path(dest)
    if not zipfile.is_zipfile(archive):
        raise DataUnavailable(f"{archive.name} is not a .zip archive")
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        total = sum(m.file_size for m in members)
        if total > max_mb * 2**20:
            raise DataUnavailable(f"{archive.name} unpacks to {total / 2**20:.0f} MB; the limit is {max_mb:.0f} MB")
        for m in members:
            parts = Path(m.filename).parts
            if Path(m.filename).is_absolute() or ".." in parts:
                raise DataUnavailable(f"{archive.name} contains an unsafe path: {m.filename}")
        dest.mkdir(parents=True, exist_ok=True)
        for m in members:
            if "__MACOSX" in Path(m.filename).parts:
                continue
            zf.extract(m, dest)
    root = dest
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
        if len(entries) == 1 and entries[0].is_dir() and any(c.is_dir() for c in entries[0].iterdir()):
            root = entries[0]  # photos.zip -> photos/cat, photos/dog: the classes are one level down
        else:
            return root
