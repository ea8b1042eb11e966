"""Writing outputs so that a crash never leaves a half-written file or folder.

Files are written under a temporary name beside their destination, flushed to
disk, given the ordinary permissions (those the umask allows, as ``open`` would)
and renamed; folders are filled under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from gatelab.errors import GatelabError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def grants_write(folder: str | os.PathLike) -> bool:
    """Whether we may add files to ``folder``: its mode grants write as well as access does, so that root leaves
    read-only shared folders alone."""
    try:
        return bool(Path(folder).stat().st_mode & 0o222) and os.access(folder, os.W_OK)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; fsync it and rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it replaces ``path`` only if the block succeeds.

    An existing folder at ``path`` is swapped out and removed after the rename, so
    a failure at any point leaves either the old folder or the new one, never a mix.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GatelabError(f"{path} exists and is not a folder; choose another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_output_path(path: str | os.PathLike, kind: str = "file") -> Path:
    """Refuse, before any work is done, an output path that cannot be written.

    ``kind`` is ``file`` (an existing directory there is refused) or ``dir`` (an
    existing file there is refused). The parent folders must be creatable and the
    nearest existing one writable. Nothing is created.
    """
    path = Path(path).expanduser()
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    if str(path) in ("", "."):
        raise GatelabError("the output path is empty; name a file or folder")
    if kind == "file" and path.is_dir():
        raise GatelabError(f"output {path} is an existing folder; name a file")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise GatelabError(f"output {path} is an existing file; name a folder")
    parent = path.parent if kind == "file" or not path.exists() else path
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise GatelabError(f"cannot create {path}: {probe} is a file, not a folder")
    try:  # a real write, since permission bits do not tell root about read-only mounts or a full disk
        with tempfile.TemporaryFile(dir=probe) as fh:
            fh.write(b"\0")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise GatelabError(f"cannot write {path}: folder {probe} is not writable ({exc.strerror})") from None
    return path
