"""Resolve the data folder and fetch files into it with checksums."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gatelab.errors import DataMissingError
from gatelab.files import atomic_path


@dataclass(frozen=True)
class RemoteFile:
    """A data file: where it lies under the data folder, where it comes from, and its md5."""

    relpath: str
    urls: tuple[str, ...]
    md5: str


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root`` if given, else ``$GATELAB_DATA``, else ``~/.cache/gatelab``."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("GATELAB_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "gatelab"


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(remote: RemoteFile, root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return the local path of ``remote``, downloading and checking it if it is missing.

    A file already on disk is trusted (read-only shared copies are checked once
    by their own MD5SUMS); a downloaded one must match its md5 or is discarded.
    """
    base = data_dir(root)
    path = base / remote.relpath
    if path.is_file():
        return path
    where = f"put {remote.relpath} under {base} (or set GATELAB_DATA to a folder holding it)"
    if not download:
        raise DataMissingError(f"{path} is missing; {where}")
    errors = []
    for url in remote.urls:
        try:
            with atomic_path(path) as tmp:
                with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
                got = md5sum(tmp)
                if got != remote.md5:
                    raise OSError(f"checksum mismatch ({got} != {remote.md5})")
            return path
        except OSError as exc:  # URLError is an OSError
            errors.append(f"{url}: {exc}")
    raise DataMissingError(f"{path} is missing and could not be downloaded ({'; '.join(errors)}); {where}")
