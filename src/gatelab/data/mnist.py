"""MNIST and Fashion-MNIST from their IDX files."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from gatelab.data.store import RemoteFile, fetch
from gatelab.errors import GatelabError, check_choice

_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

# name -> split -> (images file, md5, labels file, md5)
_FILES = {
    "mnist": {
        "train": (
            "train-images-idx3-ubyte.gz",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432",
        ),
        "test": (
            "t10k-images-idx3-ubyte.gz",
            "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    },
    "fashion-mnist": {
        "train": (
            "train-images-idx3-ubyte.gz",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz",
            "25c81989df183df01b3e8a0aad5dffbe",
        ),
        "test": (
            "t10k-images-idx3-ubyte.gz",
            "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    },
}
_MIRRORS = {"mnist": _MNIST_MIRRORS, "fashion-mnist": _FASHION_MIRRORS}
DATASETS = tuple(_FILES)

# Per-pixel mean and standard deviation of the training images, for normalisation.
STATS = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}


def _remote(name: str, filename: str, md5: str) -> RemoteFile:
    return RemoteFile(f"{name}/{filename}", tuple(m + filename for m in _MIRRORS[name]), md5)


# IDX files here hold at most a few dimensions; more than this is a corrupt header.
MAX_IDX_DIMS = 8
_BLOCK = 1 << 22


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped or not) into an array of its declared shape.

    A gzip file is recognised by its magic bytes whatever its name. Raises GatelabError,
    naming the file and how to fix it, for a file that is not IDX, is truncated or longer
    than its header declares, or is a corrupt gzip stream; the data are read in blocks and
    never more than the header declares, so a corrupt header cannot ask for a huge allocation.
    """
    path = Path(path)
    fix = "delete it and run again to download it afresh, or put a good copy there"
    gzipped = False
    try:
        with open(path, "rb") as raw_fh:
            gzipped = raw_fh.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as fh:
            head = _read_exactly(fh, 4)
            if len(head) < 4 or head[:3] != b"\x00\x00\x08":
                raise GatelabError(
                    f"{path} is not an IDX file of unsigned bytes (bad magic number {head[:4].hex() or 'empty'}, "
                    f"expected 00000801..000008{MAX_IDX_DIMS:02x}); {fix}"
                )
            ndim = head[3]
            if not 1 <= ndim <= MAX_IDX_DIMS:
                raise GatelabError(
                    f"{path}: IDX header declares {ndim} dimensions; accepted 1 to {MAX_IDX_DIMS}; {fix}"
                )
            dims = _read_exactly(fh, 4 * ndim)
            if len(dims) < 4 * ndim:
                raise GatelabError(f"{path} is truncated inside its IDX header; {fix}")
            shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
            size = math.prod(shape)  # Python ints: no overflow
            if not gzipped:
                have = os.fstat(fh.fileno()).st_size - 4 - 4 * ndim
                if have != size:
                    raise GatelabError(
                        f"{path} holds {have} data bytes but its header declares shape {shape} ({size} bytes); "
                        f"the file is truncated or corrupt; {fix}"
                    )
            data = _read_exactly(fh, size)
            if len(data) != size:
                raise GatelabError(
                    f"{path} is truncated: its header declares shape {shape} ({size} bytes) but it holds "
                    f"{len(data)}; {fix}"
                )
            if fh.read(1):
                raise GatelabError(
                    f"{path} is corrupt: it holds more data than its header declares (shape {shape}); {fix}"
                )
    except (EOFError, zlib.error, OSError) as exc:  # gzip.BadGzipFile is an OSError
        if isinstance(exc, FileNotFoundError):
            raise GatelabError(f"IDX file {path} does not exist") from None
        raise GatelabError(
            f"{path} is a corrupt or truncated {'gzip' if gzipped else 'IDX'} file ({exc}); {fix}"
        ) from None
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _read_exactly(fh, n: int) -> bytes:
    """Up to ``n`` bytes from ``fh`` (fewer only at the end of the stream), read in blocks so that
    memory grows with the data actually there, not with what a header claims."""
    if n <= _BLOCK:
        return fh.read(n)
    parts, left = [], n
    while left > 0:
        block = fh.read(min(left, _BLOCK))
        if not block:
            break
        parts.append(block)
        left -= len(block)
    return b"".join(parts)


def load_mnist(name: str = "mnist", split: str = "train", root=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of MNIST or Fashion-MNIST."""
    check_choice("data set", name, DATASETS)
    check_choice("split", split, ("train", "test"))
    img_file, img_md5, lbl_file, lbl_md5 = _FILES[name][split]
    images = read_idx(fetch(_remote(name, img_file, img_md5), root))
    labels = read_idx(fetch(_remote(name, lbl_file, lbl_md5), root))
    if images.shape[0] != labels.shape[0]:
        raise GatelabError(f"{name} {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1:
        raise GatelabError(
            f"{name} {split}: images of shape {images.shape} and labels of shape {labels.shape}; "
            "expected (N, 28, 28) and (N,)"
        )
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def mnist_tensors(
    name: str = "mnist", split: str = "train", root=None, normalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images (N, 1, 28, 28) in [0, 1] (or standardised) and labels, ready for a classifier."""
    images, labels = load_mnist(name, split, root)
    x = images.float().div_(255.0).unsqueeze(1)
    if normalize:
        mean, std = STATS[name]
        x = x.sub_(mean).div_(std)
    return x, labels
