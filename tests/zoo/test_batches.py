"""Batches made on demand: memory follows the batch, not the image count."""

from __future__ import annotations

import pickle

import pytest
import torch

from qcore.zoo.batches import MAX_BATCH, Batches, batch_size_for


def _double(x: torch.Tensor) -> torch.Tensor:
    return x.float() * 2


def test_batch_size_follows_the_input_size():
    assert batch_size_for((1, 28, 28)) == MAX_BATCH  # Fashion-MNIST: as large as it gets
    assert batch_size_for((3, 224, 224)) == 32
    assert batch_size_for((3, 512, 512)) == 6
    assert batch_size_for((3, 4096, 4096)) == 1


def test_batches_read_like_a_list_of_preprocessed_batches():
    images = torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1)
    xs = Batches(images, _double, 4)
    assert len(xs) == 3 and xs.count == 10
    assert [x.flatten().tolist() for x in xs] == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]]
    assert xs[-1].flatten().tolist() == [16, 18] and xs[0].dtype == torch.float32
    assert [x.flatten().tolist() for x in xs[1:]] == [[8, 10, 12, 14], [16, 18]]
    assert xs.head(5).flatten().tolist() == [0, 2, 4, 6, 8]
    assert xs.first(5).count == 5 and len(xs.first(5)) == 2
    assert len(xs.rebatched(1)) == 10
    with pytest.raises(IndexError):
        xs[3]


def test_batches_hold_and_pickle_the_uint8_images_only():
    """1000 ImageNet-size images: 150 MB as uint8 where the preprocessed floats would be 600 MB."""
    images = torch.zeros(1000, 3, 224, 224, dtype=torch.uint8)
    xs = Batches(images, _double, 32)
    assert len(pickle.dumps(xs)) < 1.01 * images.numel()
    first = xs[0]
    assert first.dtype == torch.float32 and first.shape == (32, 3, 224, 224)


def test_prepared_inputs_are_batches_of_uint8_images():
    from qcore.zoo.inputs import prepare_inputs

    inp = prepare_inputs("fm_resnet", calib_size=300, eval_size=260)
    assert isinstance(inp.eval_batches, Batches) and inp.eval_batches.images.dtype == torch.uint8
    assert inp.eval_size == 260 and [len(x) for x in inp.eval_batches] == [250, 10]
    assert inp.calib_batches.count == 300
    assert torch.equal(inp.eval_head(3), inp.eval_batches[0][:3])
