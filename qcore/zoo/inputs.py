"""The one input step every experiment starts with: model -> data -> subsets -> checks -> batches.

Calibration images come from the train split and evaluation images from the test split, both
chosen by size and seed, so two runs with the same arguments see the same images. Preprocessing
runs once here; experiments work on the model-ready batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from qcore.quant.isa import cpu_isa
from qcore.zoo.data import ImageSet, calibration_subset, eval_subset
from qcore.zoo.models import LoadedModel, finish_loading, get_spec, load_model

__all__ = ["DEFAULT_BATCH", "Inputs", "batches", "check_compatible", "default_data", "load", "prepare_inputs"]

DEFAULT_BATCH = 250


def batches(images: torch.Tensor, preprocess: Callable, batch_size: int = DEFAULT_BATCH) -> Iterator[torch.Tensor]:
    """Model-ready float batches from raw uint8 images, preprocessed one batch at a time."""
    for i in range(0, len(images), batch_size):
        yield preprocess(images[i: i + batch_size])


def default_data(loaded: LoadedModel) -> str:
    """The dataset a model is evaluated on when none is named."""
    if loaded.spec.dataset == "fashion-mnist":
        return "fashion-mnist"
    raise ValueError(
        f"{loaded.name} classifies {loaded.spec.dataset} images: choose a dataset with those classes "
        "(e.g. imagefolder:PATH with ImageNet synset-named folders)"
    )


def check_compatible(loaded: LoadedModel, data: ImageSet) -> None:
    """Refuse to score a model on data whose labels mean something else."""
    spec = loaded.spec
    if spec.dataset == "fashion-mnist" and data.name != "fashion-mnist":
        raise ValueError(f"{spec.name} was trained on Fashion-MNIST; {data.name} has different classes")
    if spec.dataset == "imagenet" and len(data.class_names) != 1000:
        raise ValueError(
            f"{spec.name} predicts the 1000 ImageNet classes; {data.name} has {len(data.class_names)} classes. "
            "Name the image folders by ImageNet synset id (n01440764, ...) to evaluate it."
        )
    h, w = data.images.shape[-2:]
    want = spec.input_shape[1:]
    if spec.preprocess.crop is None and (h, w) != tuple(want):
        raise ValueError(f"{data.name} has {h}x{w} images; {spec.name} takes {want[0]}x{want[1]} inputs")
    if int(data.labels.max()) >= len(spec.class_names):
        raise ValueError(f"{data.name} has labels up to {int(data.labels.max())}; {spec.name} has {len(spec.class_names)} classes")


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
    calib_batches: list[torch.Tensor]
    eval_batches: list[torch.Tensor]
    labels: torch.Tensor | None
    calib_size: int

    @property
    def eval_size(self) -> int:
        return int(sum(len(x) for x in self.eval_batches))

    def identity(self) -> dict:
        """What every report starts with: which model (name and weights digest) on which data, and the
        instruction sets of the CPU it ran on (INT8 results depend on them)."""
        return {"model": self.loaded.name, "model_id": self.loaded.info["sha256"][:16], "seed": self.seed,
                "calib_size": self.calib_size, "data": self.data, "isa": cpu_isa().to_dict()}


def _random_inputs(model: str | LoadedModel, seed: int) -> Inputs:
    """Random weights and random inputs: enough to time a model whose weights are not here."""
    torch.manual_seed(seed)
    if isinstance(model, LoadedModel):
        loaded = model
    else:
        spec = get_spec(model)
        loaded = finish_loading(spec, spec.build(), {"weights": "random (latency only)"})
    g = torch.Generator().manual_seed(seed)
    calib = [torch.randn(8, *loaded.spec.input_shape, generator=g) for _ in range(4)]
    return Inputs(loaded, None, seed, calib, calib[:1], None, 32)


def prepare_inputs(
    model: str | LoadedModel,
    data: str | None = None,
    calib_size: int = 512,
    eval_size: int | None = None,
    seed: int = 0,
    weights: str | None = None,
    random_weights: bool = False,
    eval_batch: int = DEFAULT_BATCH,
) -> Inputs:
    """Load the model and its calibration/evaluation batches (`eval_size` None: the whole test split)."""
    if random_weights:
        return _random_inputs(model, seed)
    loaded = load(model, weights)
    data_name = data or default_data(loaded)
    calib = calibration_subset(data_name, calib_size, seed)
    evald = eval_subset(data_name, eval_size, seed)
    check_compatible(loaded, evald)
    pre = loaded.spec.preprocess
    return Inputs(loaded, data_name, seed, list(batches(calib.images, pre)), list(batches(evald.images, pre, eval_batch)),
                  evald.labels, len(calib))
