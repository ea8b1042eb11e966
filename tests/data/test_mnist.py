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


def _idx(shape, data: bytes) -> bytes:
    return bytes([0, 0, 8, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape) + data


@pytest.fixture
def small_gz(tmp_path):
    """The first 200 real test images as a gzipped IDX file."""
    x = read_idx(data_dir() / "mnist" / "t10k-images-idx3-ubyte.gz")[:200]
    path = tmp_path / "small-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx(x.shape, x.tobytes())))
    assert (read_idx(path) == x).all()
    return path


def test_corrupt_gzip_names_the_file_and_the_fix(small_gz):
    raw = bytearray(small_gz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    small_gz.write_bytes(bytes(raw))
    with pytest.raises(GatelabError, match="small-idx3-ubyte.gz.*corrupt.*delete it"):
        read_idx(small_gz)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_gzip(small_gz, keep):
    raw = small_gz.read_bytes()
    small_gz.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(GatelabError, match="small-idx3-ubyte.gz"):
        read_idx(small_gz)


def test_not_gzip_at_all_but_named_gz(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(b"\x1f\x8b\x08garbage that is not deflate")
    with pytest.raises(GatelabError, match="labels.gz is a corrupt or truncated gzip"):
        read_idx(path)


def test_gzip_is_recognised_by_content_not_name(tmp_path):
    path = tmp_path / "labels.idx"
    path.write_bytes(gzip.compress(_idx((3,), b"\x01\x02\x03")))
    assert read_idx(path).tolist() == [1, 2, 3]


@pytest.mark.parametrize("compress", [False, True])
def test_huge_declared_shape_fails_fast_without_allocating(tmp_path, compress):
    # (2**32 - 1)**3 bytes: overflows int64 in numpy; must be refused from the actual length.
    content = _idx((2**32 - 1,) * 3, b"\x00" * 100)
    path = tmp_path / "huge.idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(GatelabError, match="huge.idx.*(truncated|holds 100 data bytes)"):
        read_idx(path)


@pytest.mark.parametrize("ndim", [0, 9, 255])
def test_absurd_number_of_dimensions(tmp_path, ndim):
    path = tmp_path / "dims.idx"
    path.write_bytes(bytes([0, 0, 8, ndim]) + b"\x00\x00\x00\x01" * min(ndim, 9) + b"\x00")
    with pytest.raises(GatelabError, match=f"declares {ndim} dimensions; accepted 1 to 8"):
        read_idx(path)


def test_extra_data_and_empty_and_missing_files(tmp_path):
    longer = tmp_path / "longer.gz"
    longer.write_bytes(gzip.compress(_idx((2,), b"\x01\x02\x03")))
    with pytest.raises(GatelabError, match="more data than its header"):
        read_idx(longer)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(GatelabError, match="not an IDX file"):
        read_idx(empty)
    with pytest.raises(GatelabError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")
