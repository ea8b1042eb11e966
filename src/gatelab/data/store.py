"""Resolve the data folder, fetch files into it, and check them against their md5 once.

A file's md5 is computed the first time :func:`fetch` returns it; a small *stamp*
(size, modification time and md5, as JSON) then records that it was good, so later
calls only compare ``os.stat``. The stamp lies beside the file (``.NAME.stamp``)
where the data folder is writable, else under ``~/.cache/gatelab/stamps`` (a
read-only shared data folder); where neither can be written the md5 is checked
on every call.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gatelab.errors import DataMissingError, GatelabError
from gatelab.files import atomic_path, grants_write, write_json


class DataChecksumError(GatelabError):
    """A data file on disk does not have the md5 of the published file (corrupt, truncated or another version)."""


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


def md5sum(path: str | os.PathLike) -> str:
    """The md5 of a file, read in 1 MiB blocks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- stamps -----------------------------------------------------------------------------
def _stamp_cache() -> Path:
    """The folder for stamps of files whose own folder is read-only."""
    return Path.home() / ".cache" / "gatelab" / "stamps"


def stamp_paths(path: str | os.PathLike) -> list[Path]:
    """Where the stamp of ``path`` may lie: beside it, then in the per-user stamp cache."""
    path = Path(path).resolve()
    key = hashlib.sha256(str(path).encode("utf-8", errors="surrogateescape")).hexdigest()[:32]
    return [path.parent / f".{path.name}.stamp", _stamp_cache() / f"{key}.json"]


def _identity(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stamped_md5(path: Path) -> str | None:
    """The md5 a stamp records for ``path`` if the stamp still matches its size and mtime, else None."""
    ident = _identity(path)
    for stamp in stamp_paths(path):
        try:
            record = json.loads(stamp.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and all(record.get(k) == v for k, v in ident.items()):
            md5 = record.get("md5")
            if isinstance(md5, str):
                return md5
    return None


def _write_stamp(path: Path, md5: str) -> Path | None:
    """Record that ``path`` (as it is now) has ``md5``; return where, or None if nowhere was writable."""
    record = {**_identity(path), "md5": md5}
    for stamp in stamp_paths(path):
        if stamp.parent == path.resolve().parent and not grants_write(stamp.parent):
            continue
        try:
            return write_json(stamp, record)
        except OSError:
            continue
    return None


def verify(path: str | os.PathLike, md5: str, fix: str = "") -> Path:
    """Check that ``path`` has ``md5``, computing it only when no current stamp says so.

    Raises :class:`DataChecksumError` naming the file, both checksums and how to fix it.
    """
    path = Path(path)
    if _stamped_md5(path) == md5:
        return path
    got = md5sum(path)
    if got != md5:
        raise DataChecksumError(
            f"{path} is corrupt or not the published file: its md5 is {got}, expected {md5}. "
            f"Delete it and run again to download it afresh, or put a good copy there{fix}"
        )
    _write_stamp(path, got)
    return path


def fetch(remote: RemoteFile, root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return the local path of ``remote``, downloading it if it is missing, and check its md5.

    A file already on disk is md5-checked the first time and stamped (see the module
    docstring); a mismatch raises :class:`DataChecksumError`. A downloaded file that
    does not match is discarded and the next mirror tried.
    """
    base = data_dir(root)
    path = base / remote.relpath
    where = f"put {remote.relpath} under {base} (or set GATELAB_DATA to a folder holding it)"
    if path.is_file():
        return verify(path, remote.md5, f" (from {remote.urls[0]})" if remote.urls else "")
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
            _write_stamp(path, got)
            return path
        except OSError as exc:  # URLError is an OSError
            errors.append(f"{url}: {exc}")
    raise DataMissingError(f"{path} is missing and could not be downloaded ({'; '.join(errors)}); {where}")
