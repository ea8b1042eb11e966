"""fetch checks a file on disk against its md5 once, stamps it, and notices when it changes."""

import hashlib
import os

import pytest

from gatelab.data import store
from gatelab.data.store import DataChecksumError, RemoteFile, fetch, stamp_paths
from gatelab.errors import GatelabError


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private home, so that stamps for read-only folders land in a temporary ~/.cache."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _remote(content: bytes, name="set/file.bin") -> RemoteFile:
    return RemoteFile(name, ("https://example.invalid/file.bin",), hashlib.md5(content).hexdigest())


def test_md5_computed_once_then_stamp_trusted(tmp_path, home, monkeypatch):
    content = b"published bytes\n" * 100
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "file.bin").write_bytes(content)
    remote = _remote(content)
    calls = []
    real = store.md5sum
    monkeypatch.setattr(store, "md5sum", lambda p: calls.append(p) or real(p))

    assert fetch(remote, tmp_path, download=False) == tmp_path / "set" / "file.bin"
    stamp = tmp_path / "set" / ".file.bin.stamp"
    assert stamp.is_file() and remote.md5 in stamp.read_text()
    assert len(calls) == 1
    for _ in range(3):
        fetch(remote, tmp_path, download=False)
    assert len(calls) == 1  # the stamp answered; no second md5


def test_a_changed_file_is_detected_and_named(tmp_path, home):
    content = b"x" * 1000
    path = tmp_path / "set" / "file.bin"
    path.parent.mkdir()
    path.write_bytes(content)
    remote = _remote(content)
    fetch(remote, tmp_path)
    path.write_bytes(b"y" + content[1:])  # same size; the mtime moves
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(DataChecksumError) as info:
        fetch(remote, tmp_path)
    message = str(info.value)
    assert str(path) in message and remote.md5 in message
    assert "Delete it" in message and "good copy" in message
    assert isinstance(info.value, GatelabError)


def test_a_file_corrupt_from_the_start_is_refused(tmp_path, home):
    path = tmp_path / "set" / "file.bin"
    path.parent.mkdir()
    path.write_bytes(b"truncated")
    with pytest.raises(DataChecksumError, match="file.bin is corrupt"):
        fetch(_remote(b"truncated and more"), tmp_path, download=False)
    assert not (tmp_path / "set" / ".file.bin.stamp").exists()  # never stamp a bad file


def test_read_only_folder_stamps_in_the_user_cache(tmp_path, home):
    content = b"shared copy"
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "file.bin").write_bytes(content)
    folder.chmod(0o555)  # read-only by its mode (root would be allowed to write; we must not)
    try:
        fetch(_remote(content), tmp_path)
        beside, cached = stamp_paths(folder / "file.bin")
        assert not beside.exists()
        assert cached.is_file() and str(cached).startswith(str(home / ".cache" / "gatelab" / "stamps"))
        assert sorted(p.name for p in folder.iterdir()) == ["file.bin"]
    finally:
        folder.chmod(0o755)


def test_nothing_writable_checks_every_time(tmp_path, home, monkeypatch):
    content = b"shared copy"
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "file.bin").write_bytes(content)
    folder.chmod(0o555)
    home.mkdir()
    (home / ".cache").write_text("a file where the cache folder should be")  # ~/.cache cannot be created
    calls = []
    real = store.md5sum
    monkeypatch.setattr(store, "md5sum", lambda p: calls.append(p) or real(p))
    try:
        fetch(_remote(content), tmp_path)
        fetch(_remote(content), tmp_path)
    finally:
        folder.chmod(0o755)
    assert len(calls) == 2


def test_a_stale_or_garbled_stamp_is_ignored(tmp_path, home):
    content = b"abc" * 10
    path = tmp_path / "set" / "file.bin"
    path.parent.mkdir()
    path.write_bytes(content)
    (path.parent / ".file.bin.stamp").write_text("{not json")
    fetch(_remote(content), tmp_path)  # rewrites the stamp
    assert '"md5"' in (path.parent / ".file.bin.stamp").read_text()
    with pytest.raises(DataChecksumError):
        fetch(_remote(b"other"), tmp_path)  # a stamp for another md5 proves nothing


def test_missing_file_without_download(tmp_path, home):
    with pytest.raises(GatelabError, match="is missing; put set/file.bin under"):
        fetch(_remote(b""), tmp_path, download=False)
