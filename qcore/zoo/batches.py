"""Model-ready batches made on demand from uint8 images, so memory follows the batch, not the image count.

A 224x224 RGB image is 150 KB as uint8 and 600 KB as a preprocessed float tensor; 1000 evaluation images
kept preprocessed are 600 MB before any model runs, and a forward pass over a batch of 250 such images
holds gigabytes of activations. `Batches` keeps the uint8 images only and preprocesses one batch each time
it is read; the batch size follows the input size (`batch_size_for`). It is a read-only sequence of float
batches, so the experiments' `for x in batches`, `len(batches)`, `batches[0]` and `batches[:1]` work on it as
they did on a list, and it pickles as its uint8 images (for Ray workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Iterator

import torch

__all__ = ["BATCH_VALUES", "Batches", "MAX_BATCH", "as_is", "batch_size_for"]

MAX_BATCH = 250
# Input values per batch: 32 images at 3x224x224. The activations of an ImageNet-class network at batch 32
# stay well under a gigabyte per tensor (EfficientNet-B0's widest, 96x112x112, is 154 MB at batch 32), while
# a Fashion-MNIST batch is still MAX_BATCH images, where batching is what makes the passes fast.
BATCH_VALUES = 32 * 3 * 224 * 224


def batch_size_for(input_shape: tuple[int, ...], cap: int = MAX_BATCH) -> int:
    """Images per batch for a model taking `input_shape` (C, H, W): BATCH_VALUES input values, 1 to `cap`."""
    values = 1
    for d in input_shape:
        values *= int(d)
    return max(1, min(cap, BATCH_VALUES // max(1, values)))


def as_is(x: torch.Tensor) -> torch.Tensor:
    """The preprocessing of inputs that are model-ready already (random inputs for timing)."""
    return x


class Batches(Sequence):
    """Float batches of `batch_size` images, preprocessed from `images` (uint8, N x C x H x W) when read."""

    def __init__(self, images: torch.Tensor, preprocess: Callable[[torch.Tensor], torch.Tensor], batch_size: int):
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        self.images, self.preprocess, self.batch_size = images, preprocess, int(batch_size)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                raise ValueError("Batches slices take consecutive batches")
            return Batches(self.images[start * self.batch_size: stop * self.batch_size], self.preprocess, self.batch_size)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.preprocess(self.images[i * self.batch_size: (i + 1) * self.batch_size])

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(len(self)):
            yield self[i]

    @property
    def count(self) -> int:
        """Images in all the batches."""
        return len(self.images)

    def first(self, n: int) -> "Batches":
        """The first `n` images, batched the same way."""
        return Batches(self.images[:n], self.preprocess, self.batch_size)

    def head(self, n: int) -> torch.Tensor:
        """The first `n` images as one preprocessed batch (a probe, a timing input), without the rest."""
        return self.preprocess(self.images[:n])

    def rebatched(self, batch_size: int) -> "Batches":
        """The same images in batches of `batch_size`."""
        return Batches(self.images, self.preprocess, batch_size)
