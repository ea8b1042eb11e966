"""The IDX readers on the real files, the resolver, and malformed files."""

import gzip

import pytest
import torch

from gatelab.data import data_dir, load_mnist, mnist_tensors
from gatelab.data.mnist import read_idx
from gatelab.data.store import md5sum
from gatelab.errors import GatelabError


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_files_have_the_published_shapes_and_checksums(name):
    x, y = load_mnist(name, "test")
    assert x.shape == (10000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (10000,) and set(y.tolist()) == set(range(10))
    assert md5sum(data_dir() / name / "t10k-labels-idx1-ubyte.gz") in (
        "ec29112dd5afa0611ce80d1b7f02629c",
        "bb300cfdad3c16e7a12a480ee83cd310",
    )


def test_mnist_tensors_scale_to_unit_interval():
    x, y = mnist_tensors("mnist", "test")
    assert x.shape == (10000, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert y[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test labels


def test_resolver_order(tmp_path, monkeypatch):
    monkeypatch.setenv("GATELAB_DATA", str(tmp_path / "env"))
    assert data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_dir() == tmp_path / "env"
    monkeypatch.delenv("GATELAB_DATA")
    assert data_dir().name == "gatelab"


def test_malformed_idx_files(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\x00\x00\x09\x01" + b"\x00" * 8)
    with pytest.raises(GatelabError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x10abc")
    with pytest.raises(GatelabError, match="truncated"):
        read_idx(short)


def test_unknown_names():
    with pytest.raises(GatelabError, match="accepted: mnist, fashion-mnist"):
        load_mnist("cifar10")
    with pytest.raises(GatelabError, match="accepted: train, test"):
        load_mnist("mnist", "valid")
