"""The one input step every experiment starts with: model -> data -> subsets -> checks -> batches.

Calibration images come from the train split and evaluation images from the test split, both
chosen by size and seed, so two runs with the same arguments see the same images. The images stay uint8;
experiments read model-ready batches from `Batches`, which preprocesses each batch when it is read, in
batches sized by the input (`batch_size_for`): memory follows the batch, not the number of images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from qcore.quant.isa import cpu_isa
from qcore.zoo.batches import Batches, as_is, batch_size_for
from qcore.zoo.data import ImageSet, calibration_subset, eval_subset, imagenet_wnids
from qcore.zoo.models import LoadedModel, finish_loading, get_spec, load_model
from qcore.zoo.report import RunIdentity

__all__ = ["Batches", "Inputs", "batch_size_for", "batches", "check_compatible", "decode_for", "default_data", "fp32_predictions",
           "load", "prepare_inputs"]


def batches(images: torch.Tensor, preprocess: Callable, batch_size: int | None = None) -> Batches:
    """Model-ready float batches from raw uint8 images, preprocessed one batch at a time when read; by default
    as many images per batch as the image size allows (`batch_size_for`)."""
    return Batches(images, preprocess, batch_size or batch_size_for(tuple(images.shape[1:])))


def default_data(loaded: LoadedModel) -> str:
    """The dataset a model is evaluated on when none is named."""
    if loaded.spec.dataset == "fashion-mnist":
        return "fashion-mnist"
    raise ValueError(
        f"{loaded.name} classifies {loaded.spec.dataset} images: name the images to run it on (Dataset in the "
        "sidebar, --data on the command line): imagefolder:PATH with class sub-folders (ImageNet synset names "
        "such as n01440764 for ImageNet models) or plain images (scored by agreement with FP32), fashion-mnist, cifar10"
    )


def decode_for(loaded: LoadedModel) -> tuple[int, str]:
    """(size, interpolation) image files are decoded at for this model's preprocessing."""
    pre = loaded.spec.preprocess
    return pre.decode_size(loaded.spec.input_shape), pre.interpolation


def _labels_are_the_models(loaded: LoadedModel, data: ImageSet) -> bool:
    """Whether the data's class indices mean the model's classes."""
    spec = loaded.spec
    if not data.labeled or int(data.labels.max()) >= len(spec.class_names):
        return False
    if data.class_names == spec.class_names:
        return True
    if spec.dataset == "imagenet":
        return data.class_names == imagenet_wnids()  # synset-named folders: ImageNet's class order
    # an own model with numbered classes and as many class folders: torchvision's sorted-folder order
    return spec.family == "user" and spec.dataset == "user" and len(data.class_names) == len(spec.class_names)


def check_compatible(loaded: LoadedModel, data: ImageSet) -> str:
    """How the model is scored on `data`: "labels", or "fp32" (top-1 agreement with the FP32 model) for
    an image folder without labels the model knows. Refuses a named dataset whose labels mean something
    else, and images of the wrong size."""
    spec = loaded.spec
    h, w = data.images.shape[-2:]
    want = spec.input_shape[1:]
    if spec.preprocess.crop is None and (h, w) != tuple(want):
        raise ValueError(f"{data.name} has {h}x{w} images; {spec.name} takes {want[0]}x{want[1]} inputs")
    if spec.preprocess.crop is not None and min(h, w) < spec.preprocess.crop:
        raise ValueError(f"{data.name} has {h}x{w} images; {spec.name} takes {want[0]}x{want[1]} inputs")
    if _labels_are_the_models(loaded, data):
        return "labels"
    if data.name.startswith("imagefolder:"):
        return "fp32"
    if spec.dataset == "fashion-mnist":
        raise ValueError(f"{spec.name} was trained on Fashion-MNIST; {data.name} has different classes")
    raise ValueError(
        f"{spec.name} predicts {len(spec.class_names)} classes ({spec.dataset}); {data.name} has "
        f"{len(data.class_names)} classes. Use an image folder: synset-named folders (n01440764, ...) for ImageNet "
        "models, or plain images, scored by agreement with FP32.")


def load(model: str | LoadedModel, weights: str | None = None) -> LoadedModel:
    """A registry name (loaded now) or an already loaded model, as is."""
    return model if isinstance(model, LoadedModel) else load_model(model, weights=weights)


@dataclass
class Inputs:
    """A model with the images an experiment runs on. With random weights (latency only) the batches
    are random tensors and there are no labels, no evaluation set and no dataset name."""

    loaded: LoadedModel
    data: str | None
    seed: int
    calib_batches: Batches
    eval_batches: Batches
    labels: torch.Tensor | None
    calib_size: int
    scored_by: str = "labels"  # "fp32": unlabeled images, `labels` are the FP32 model's top-1 predictions

    def eval_head(self, n: int) -> torch.Tensor:
        """The first `n` evaluation images as one model-ready batch (probes, timing inputs)."""
        return self.eval_batches.head(n)

    @property
    def eval_size(self) -> int:
        return self.eval_batches.count

    def run_identity(self) -> RunIdentity:
        """What every report starts with: which model (name and weights digest) on which data, and the
        instruction sets of the CPU it ran on (INT8 results depend on them)."""
        return RunIdentity(model=self.loaded.name, model_id=self.loaded.info["sha256"][:16], data=self.data,
                           seed=self.seed, calib_size=self.calib_size, isa=cpu_isa().to_dict(), scored_by=self.scored_by)


def _random_inputs(model: str | LoadedModel, seed: int) -> Inputs:
    """Random weights and random inputs: enough to time a model whose weights are not here."""
    torch.manual_seed(seed)
    if isinstance(model, LoadedModel):
        loaded = model
    else:
        spec = get_spec(model)
        loaded = finish_loading(spec, spec.build(), {"weights": "random (latency only)"})
    g = torch.Generator().manual_seed(seed)
    calib = Batches(torch.randn(32, *loaded.spec.input_shape, generator=g), as_is, 8)
    return Inputs(loaded, None, seed, calib, calib[:1], None, 32)


def prepare_inputs(
    model: str | LoadedModel,
    data: str | None = None,
    calib_size: int = 512,
    eval_size: int | None = None,
    seed: int = 0,
    weights: str | None = None,
    random_weights: bool = False,
    eval_batch: int | None = None,
) -> Inputs:
    """Load the model and its calibration/evaluation batches (`eval_size` None: the whole test split)."""
    if random_weights:
        return _random_inputs(model, seed)
    loaded = load(model, weights)
    data_name = data or default_data(loaded)
    calib = calibration_subset(data_name, calib_size, seed, decode_for(loaded))
    evald = eval_subset(data_name, eval_size, seed, decode_for(loaded))
    scored_by = check_compatible(loaded, evald)
    pre = loaded.spec.preprocess
    eval_batches = batches(evald.images, pre, eval_batch)
    labels = evald.labels if scored_by == "labels" else fp32_predictions(loaded.module, eval_batches)
    return Inputs(loaded, data_name, seed, batches(calib.images, pre), eval_batches, labels, len(calib), scored_by)


@torch.no_grad()
def fp32_predictions(module, eval_batches) -> torch.Tensor:
    """The FP32 model's top-1 classes: the reference unlabeled images are scored against."""
    return torch.cat([module(x).argmax(1) for x in eval_batches])
