"""MNIST and Fashion-MNIST from their IDX files."""

from __future__ import annotations

import gzip
import os

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


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) of unsigned bytes into an array of its declared shape."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise GatelabError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise GatelabError(f"{path} is truncated: header declares shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(name: str = "mnist", split: str = "train", root=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of MNIST or Fashion-MNIST."""
    check_choice("data set", name, DATASETS)
    check_choice("split", split, ("train", "test"))
    img_file, img_md5, lbl_file, lbl_md5 = _FILES[name][split]
    images = read_idx(fetch(_remote(name, img_file, img_md5), root))
    labels = read_idx(fetch(_remote(name, lbl_file, lbl_md5), root))
    if images.shape[0] != labels.shape[0]:
        raise GatelabError(f"{name} {split}: {images.shape[0]} images but {labels.shape[0]} labels")
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
