"""Shared fixtures. No test touches the network: connections off this machine raise at once."""

from __future__ import annotations

import gzip
import socket
import struct

import numpy as np
import pytest

_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")) or self.family == socket.AF_UNIX:
        return _real_connect(self, address)
    raise OSError(f"tests must not touch the network (tried {address!r})")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(autouse=True)
def private_history(tmp_path_factory, monkeypatch):
    """Each test writes its runs to its own history file, never to the user's data directory."""
    path = tmp_path_factory.mktemp("history") / "history.sqlite"
    monkeypatch.setenv("QX_HISTORY_DB", str(path))
    return path


def write_idx(path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file, the format Fashion-MNIST ships in."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion_mnist(tmp_path, monkeypatch):
    """A 60/20-image Fashion-MNIST look-alike in a temporary QX_DATA_DIR; returns (dir, arrays)."""
    from qcore.zoo import data

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n, (img_name, lbl_name) in (("train", 60, data._FM_FILES["train"]), ("test", 20, data._FM_FILES["test"])):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(tmp_path / img_name, images)
        write_idx(tmp_path / lbl_name, labels)
        arrays[split] = (images, labels)
    monkeypatch.setenv("QX_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    data._FM_CACHE.clear()
    yield tmp_path, arrays
    data._FM_CACHE.clear()
