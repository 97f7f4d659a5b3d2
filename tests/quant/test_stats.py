import numpy as np
import pytest
import torch

from qcore.quant.stats import STORE_BINS, TensorStats


def _numpy_counts(values: torch.Tensor, hist) -> np.ndarray:
    return np.histogram(values.double().numpy(), bins=hist.edges.numpy())[0]


def test_min_max_count_are_exact_across_batches():
    st = TensorStats("t")
    parts = [torch.randn(1000) * 0.1, torch.randn(1000) * 5 + 3, -torch.rand(100) * 40]
    for p in parts:
        st.update(p)
    allx = torch.cat(parts)
    assert st.min == float(allx.min()) and st.max == float(allx.max())
    assert st.count == len(allx)
    assert st.histogram().total == len(allx)


def test_growing_range_keeps_at_least_2048_bins_and_matches_numpy():
    st = TensorStats("t")
    parts = [torch.randn(5000) * 0.01, torch.randn(5000) * 10, torch.randn(5000) * 1000]
    for p in parts:
        st.update(p)
    hist = st.histogram()
    assert len(hist.counts) >= 2048
    assert hist.edges[0] <= st.min and hist.edges[-1] >= st.max
    diff = np.abs(_numpy_counts(torch.cat(parts), hist) - hist.counts.numpy())
    assert diff.sum() <= 10  # only float rounding at bin edges may move a value to a neighbour


def test_zero_anchored_grid_and_exact_fold():
    st = TensorStats("t")
    x = torch.tensor([-2.5, -0.1, 0.1, 0.2, 2.4, 3.0])
    st.update(x)
    hist = st.histogram()
    assert any(abs(e) < 1e-12 for e in hist.edges.tolist())  # 0 is a bin edge
    folded = hist.folded()
    assert folded.total == len(x)
    # each |x| lands in its bin (a value sitting on an edge may land one bin over)
    assert np.abs(_numpy_counts(x.abs(), folded) - folded.counts.numpy()).sum() <= 2
    assert float(folded.counts[:-1].sum()) < len(x) and folded.edges[-1] >= 3.0


def test_nonfinite_values_are_counted_apart():
    st = TensorStats("t")
    st.update(torch.tensor([1.0, float("nan"), float("inf"), -2.0]))
    assert st.nonfinite == 2 and st.count == 2 and st.max == 1.0


def test_empty_stats_refuse_histogram():
    with pytest.raises(ValueError, match="no values"):
        TensorStats("empty").histogram()


def test_constant_zero_tensor():
    st = TensorStats("dead relu")
    st.update(torch.zeros(100))
    assert st.histogram().total == 100 and st.min == st.max == 0.0
    assert STORE_BINS >= 4096
