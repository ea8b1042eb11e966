"""Data sets and the one place that decides where they live.

``data_dir`` resolves the folder (an explicit path, else ``$GATELAB_DATA``,
else ``~/.cache/gatelab``); ``fetch`` returns a file inside it, downloading it
from its official location with a checksum when it is missing.
"""

from gatelab.data.mnist import DATASETS as IMAGE_DATASETS
from gatelab.data.mnist import load_mnist, mnist_tensors
from gatelab.data.splits import image_splits, validation_split
from gatelab.data.store import DataChecksumError, RemoteFile, data_dir, fetch

__all__ = [
    "data_dir",
    "fetch",
    "RemoteFile",
    "DataChecksumError",
    "load_mnist",
    "mnist_tensors",
    "IMAGE_DATASETS",
    "validation_split",
    "image_splits",
]
