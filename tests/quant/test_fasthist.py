"""Histogram counts on the zero-anchored grid: the compiled kernel and torch.bincount (the path without a C
compiler) are both exact, values on bin edges included, so results never depend on whether gcc is installed."""

import pytest
import torch

from qcore.quant import fasthist
from qcore.quant.stats import TensorStats

needs_kernel = pytest.mark.skipif(not fasthist.available(), reason="no C compiler: the torch.bincount path is used")


def _reference(x: torch.Tensor, width: float, k0: int, nbins: int) -> torch.Tensor:
    return torch.bincount((torch.floor(x.double() / width) - k0).long().clamp(0, nbins - 1), minlength=nbins).double()


@pytest.mark.parametrize("path", [pytest.param("kernel", marks=needs_kernel), "bincount"])
@pytest.mark.parametrize("exponent, k0, n", [(-8, 0, 1000), (-3, -2048, 300_001), (1, -4000, 5), (-12, -17, 1_000_003)])
def test_counts_are_exact_including_values_on_bin_edges(path, exponent, k0, n, monkeypatch):
    g = torch.Generator().manual_seed(n)
    width = 2.0 ** exponent
    x = (torch.rand(n, generator=g) * 4096 + k0) * width
    x[: n // 3] = torch.randint(k0, k0 + 4096, (n // 3,), generator=g).float() * width  # exactly on edges
    x[n // 3: n // 2] = 0.0
    if path == "bincount":
        monkeypatch.setattr(fasthist, "BINCOUNT_CHUNK", 100_000)  # several chunks
        got = fasthist.bincount_counts(x, width, k0, 4096)
    else:
        got = fasthist.counts(x, width, k0, 4096)
    assert torch.equal(got, _reference(x, width, k0, 4096))


@needs_kernel
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


def test_statistics_without_a_compiler_are_the_same_counts(monkeypatch):
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(64, 8, 10, 10, generator=g) * s for s in (1.0, 3.0, 0.5)]
    with_kernel, without = TensorStats("kernel"), TensorStats("bincount")
    for b in batches:
        with_kernel.update(b)
    # exact: the growing grid merged earlier batches without error
    everything = torch.cat([b.flatten() for b in batches])
    assert torch.equal(with_kernel.counts, _reference(everything, with_kernel.width, with_kernel.k0,
                                                      len(with_kernel.counts)))
    monkeypatch.setattr(fasthist, "_library", lambda: None)  # as on a machine without cc
    for b in batches:
        without.update(b)
    assert (without.width, without.k0) == (with_kernel.width, with_kernel.k0)
    assert torch.equal(without.counts, with_kernel.counts)
