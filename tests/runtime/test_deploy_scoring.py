"""Deploy scores a path that compiles per batch size (TorchScript x86) at the batch size it was timed at."""

import torch

from qcore.runtime.backends.common import Runner
from qcore.runtime.deploy import _in_chunks


def test_a_shape_specialized_path_sees_only_its_timed_batch_size_and_gives_the_same_logits():
    seen = []
    weight = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))

    def run(x):
        seen.append(len(x))
        return x @ weight.t()

    x = torch.randn(250, 3, generator=torch.Generator().manual_seed(1))
    chunked = _in_chunks(Runner("x86", "int8", run, shape_specialized=True), 32)
    out = chunked(x)
    assert set(seen) == {32}  # 7 x 32, then the remaining 26 padded to 32: no new batch size to compile
    torch.testing.assert_close(out, x @ weight.t())
    seen.clear()
    assert chunked(x[:8]).shape == (8, 5) and seen == [8]  # a batch smaller than the chunk goes as it is
    plain = Runner("ort_u8s8", "int8", run)
    assert _in_chunks(plain, 32) is plain  # runtimes that take any batch are fed the evaluation batches
