"""How images become a model's input: decode size, interpolation, centre crop, channels, mean/std.

Images are decoded once per dataset at the model's `resize` (short side, then a centre square),
and each batch is centre-cropped to the model's input and normalized here. Resize-then-crop in two
steps equals torchvision's `Resize(256) + CenterCrop(224)`: centre crops compose.

Presets, by the conventions pretrained weights were trained with:
- `imagenet`: torchvision's ImageNet evaluation, resize 256 (crop / 0.875), centre crop 224,
  ImageNet mean/std, bilinear;
- `tf`: TF/Inception style, mean = std = 0.5, same resize ratio;
- `timm`: the architecture's own pretrained config (input size, crop_pct, interpolation, mean, std);
- `custom`: every value given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = ["Preprocess", "PRESETS", "IMAGENET_MEAN", "IMAGENET_STD", "preset", "parse_floats", "parse_shape"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESETS = ("imagenet", "tf", "timm", "custom")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
DEFAULT_CROP_PCT = 0.875


@dataclass(frozen=True)
class Preprocess:
    """How raw uint8 images (N, C, H, W) become the model's float input."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    crop: int | None = None  # centre crop to this square size, after the decode-time resize
    resize: int | None = None  # short side when image files are decoded (None: the input size)
    interpolation: str = "bilinear"
    name: str = "custom"

    def __post_init__(self):
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need {self.channels} values each (one per channel), "
                             f"not {len(self.mean)} and {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("every std value must be positive")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}")
        if self.crop is not None and self.resize is not None and self.resize < self.crop:
            raise ValueError(f"the resize ({self.resize}) must be at least the crop ({self.crop})")

    def decode_size(self, input_shape: tuple[int, int, int]) -> int:
        """The square size image files are decoded to for a model with this input shape."""
        return self.resize or self.crop or input_shape[1]

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line for the Model page and the reports."""
        steps = [f"{self.name}:"]
        if self.resize:
            steps.append(f"resize {self.resize} ({self.interpolation})")
        if self.crop:
            steps.append(f"centre crop {self.crop}")
        steps.append(f"{self.channels} channel{'s' if self.channels > 1 else ''}")
        steps.append("mean " + "/".join(f"{v:.3g}" for v in self.mean) + ", std " + "/".join(f"{v:.3g}" for v in self.std))
        return " ".join(steps[:1]) + " " + ", ".join(steps[1:])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = _to_channels(images, self.channels)
        if self.crop is not None and (x.shape[-1] != self.crop or x.shape[-2] != self.crop):
            h, w = x.shape[-2:]
            if h < self.crop or w < self.crop:
                raise ValueError(f"images are {h}x{w}; this model needs at least {self.crop}x{self.crop}")
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
            x = x[..., top: top + self.crop, left: left + self.crop]
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std


def _to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] == 3 and channels == 1:
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot turn {x.shape[1]}-channel images into {channels} channels")


def parse_shape(text: str | None) -> tuple[int, int, int] | None:
    """'3,224,224' (or 3x224x224) -> (3, 224, 224); None or '' -> None; ValueError when it is not three numbers."""
    if not text or not str(text).strip():
        return None
    try:
        shape = tuple(int(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise ValueError(f"the input shape takes three numbers, channels, height, width (C,H,W), not {text!r}")
    return shape


def parse_floats(text: str | None) -> tuple[float, ...] | None:
    """'0.485,0.456,0.406' -> (0.485, 0.456, 0.406); None or '' -> None."""
    if not text or not str(text).strip():
        return None
    try:
        return tuple(float(v) for v in str(text).replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of numbers") from None


def preset(name: str, input_shape: tuple[int, int, int], timm_config: dict | None = None, *,
           mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
           resize: int | None = None, crop: int | None = None, interpolation: str | None = None) -> Preprocess:
    """The preprocessing called `name` for a model taking `input_shape` (C, H, W); explicit values
    (mean, std, resize, crop, interpolation) override the preset's."""
    channels, size = input_shape[0], input_shape[1]
    if name == "imagenet":
        base = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, interp="bilinear", crop_pct=DEFAULT_CROP_PCT)
    elif name == "tf":
        base = dict(mean=(0.5,) * 3, std=(0.5,) * 3, interp="bilinear", crop_pct=DEFAULT_CROP_PCT)
    elif name == "timm":
        if timm_config is None:
            raise ValueError("the timm preset needs a timm architecture (--arch timm:NAME)")
        size = timm_config["input_size"][1]
        base = dict(mean=tuple(timm_config["mean"]), std=tuple(timm_config["std"]),
                    interp=timm_config.get("interpolation", "bicubic"), crop_pct=timm_config.get("crop_pct", DEFAULT_CROP_PCT))
    elif name == "custom":
        base = dict(mean=(0.5,) * channels, std=(0.5,) * channels, interp="bilinear", crop_pct=1.0)
    else:
        raise ValueError(f"unknown preprocessing {name!r}; choose one of {', '.join(PRESETS)}")
    grey = channels == 1  # a grey model with an RGB preset takes the preset's channel average
    m = mean or ((sum(base["mean"]) / 3,) if grey and len(base["mean"]) == 3 else base["mean"])
    s = std or ((sum(base["std"]) / 3,) if grey and len(base["std"]) == 3 else base["std"])
    crop = crop or size
    resize = resize or int(round(crop / base["crop_pct"]))
    interp = interpolation or (base["interp"] if base["interp"] in INTERPOLATIONS else "bicubic")
    return Preprocess(tuple(m), tuple(s), channels, crop=crop, resize=resize, interpolation=interp, name=name)
