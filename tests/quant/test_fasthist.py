"""The compiled histogram kernel: exact on the zero-anchored grid, and the same counts as histc."""

import pytest
import torch

from qcore.quant import fasthist
from qcore.quant.stats import TensorStats

pytestmark = pytest.mark.skipif(not fasthist.available(), reason="no C compiler: the torch.histc path is used")


def _reference(x: torch.Tensor, width: float, k0: int, nbins: int) -> torch.Tensor:
    return torch.bincount((torch.floor(x.double() / width) - k0).long().clamp(0, nbins - 1), minlength=nbins).double()


@pytest.mark.parametrize("exponent, k0, n", [(-8, 0, 1000), (-3, -2048, 300_001), (1, -4000, 5), (-12, -17, 1_000_003)])
def test_counts_are_exact_including_values_on_bin_edges(exponent, k0, n):
    g = torch.Generator().manual_seed(n)
    width = 2.0 ** exponent
    x = (torch.rand(n, generator=g) * 4096 + k0) * width
    x[: n // 3] = torch.randint(k0, k0 + 4096, (n // 3,), generator=g).float() * width  # exactly on edges
    x[n // 3: n // 2] = 0.0
    assert torch.equal(fasthist.counts(x, width, k0, 4096), _reference(x, width, k0, 4096))


def test_parallel_chunks_add_up_to_one_pass():
    x = torch.relu(torch.randn(3_000_000, generator=torch.Generator().manual_seed(1)))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fasthist.counts(x, 2.0 ** -6, 0, 4096)
        torch.set_num_threads(2)
        two = fasthist.counts(x, 2.0 ** -6, 0, 4096)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two) and one.sum() == x.numel()


def test_statistics_are_exact_and_histc_differs_only_at_bin_edges(monkeypatch):
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(64, 8, 10, 10, generator=g) * s for s in (1.0, 3.0, 0.5)]
    fast, slow = TensorStats("fast"), TensorStats("slow")
    for b in batches:
        fast.update(b)
    # exact: the growing grid merged earlier batches without error
    everything = torch.cat([b.flatten() for b in batches])
    assert torch.equal(fast.counts, _reference(everything, fast.width, fast.k0, len(fast.counts)))
    monkeypatch.setattr(fasthist, "counts", lambda *a: None)
    for b in batches:
        slow.update(b)
    assert (fast.width, fast.k0) == (slow.width, slow.k0) and slow.counts.sum() == fast.counts.sum()
    # histc divides by the range, so a value on an edge now and then lands in the neighbouring bin
    assert (fast.counts - slow.counts).abs().sum() <= 1e-3 * fast.counts.sum()
