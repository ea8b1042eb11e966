"""Shared pieces of the reader fuzz tests: small valid files made from real data, a byte mutator,
and one ``read`` per reader that returns normally (after checking its result) or raises.

The fuzz tests (``test_fuzz_*.py``) drive :func:`mutate` with hypothesis; ``fuzz_count.py`` drives
it with a seeded numpy generator for a long one-off run and counts what escaped.
"""

from __future__ import annotations

import functools
import gzip
import io
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image

from gatelab.data import data_dir
from gatelab.data.mnist import read_idx
from gatelab.data.text import BrownCorpus, open_corpus
from gatelab.embeddings import KeyedVectors
from gatelab.nice.images import check_image, read_image

KINDS = ("flip", "truncate", "insert", "delete", "overwrite", "header_bytes", "header_int", "header_digits", "dup")


def mutate(base: bytes, header: int, ints: Callable[[int, int], int], rbytes: Callable[[int], bytes]) -> bytes:
    """Apply 1-4 random edits to ``base``: bit flips, truncation, insertion, deletion, random
    overwrites, duplicated runs, and header edits within its first ``header`` bytes (random bytes,
    a random big-endian int32, or ASCII digits). ``ints(lo, hi)`` draws an int in [lo, hi] and
    ``rbytes(k)`` k random bytes, so hypothesis or a seeded generator can drive it."""
    data = bytearray(base)
    for _ in range(ints(1, 4)):
        kind = KINDS[ints(0, len(KINDS) - 1)]
        n = len(data)
        if n == 0:
            data += rbytes(ints(1, 16))
            continue
        pos = ints(0, n - 1)
        hpos = ints(0, max(0, min(header, n) - 1))
        if kind == "flip":
            data[pos] ^= 1 << ints(0, 7)
        elif kind == "truncate":
            del data[ints(0, n - 1) :]
        elif kind == "insert":
            data[pos:pos] = rbytes(ints(1, 32))
        elif kind == "delete":
            del data[pos : pos + ints(1, 64)]
        elif kind == "overwrite":
            chunk = rbytes(ints(1, 16))
            data[pos : pos + len(chunk)] = chunk
        elif kind == "header_bytes":
            chunk = rbytes(ints(1, 4))
            data[hpos : hpos + len(chunk)] = chunk
        elif kind == "header_int":
            value = (0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, ints(0, 0xFFFFFFFF))[ints(0, 6)]
            data[hpos : hpos + 4] = value.to_bytes(4, "big")
        elif kind == "header_digits":
            digits = str(ints(0, 10 ** ints(1, 15))).encode()
            data[hpos : hpos + ints(0, len(digits))] = digits
        elif kind == "dup":
            data[pos:pos] = data[pos : pos + ints(1, 256)]
    return bytes(data)


# --- small valid files from real data ------------------------------------------------------
@functools.lru_cache(maxsize=None)
def digits(count: int = 20) -> np.ndarray:
    return read_idx(data_dir() / "mnist" / "t10k-images-idx3-ubyte.gz")[:count]


@functools.lru_cache(maxsize=None)
def idx_raw() -> bytes:
    x = digits(20)
    return bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in x.shape) + x.tobytes()


@functools.lru_cache(maxsize=None)
def idx_gz() -> bytes:
    return gzip.compress(idx_raw(), mtime=0)


@functools.lru_cache(maxsize=None)
def image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(digits(1)[0]).save(buf, format=fmt)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def text_bytes() -> bytes:
    with open(data_dir() / "ptb" / "ptb.valid.txt", "rb") as fh:
        return b"".join(fh.readline() for _ in range(20)) + "naïve café\n".encode()


@functools.lru_cache(maxsize=None)
def brown_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(data_dir() / "corpora" / "brown.zip") as src, zipfile.ZipFile(buf, "w") as out:
        for name in ("brown/ca01", "brown/cb01"):
            out.writestr(name, src.read(name)[:1500], compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def w2v_bytes(binary: bool) -> bytes:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(12)] + ["naïve", "東京"]
    kv = KeyedVectors(words, rng.standard_normal((len(words), 4)).astype(np.float32))
    buf = io.BytesIO()
    buf.write(f"{len(kv)} {kv.vector_size}\n".encode())
    for word, row in zip(kv.index_to_key, kv.vectors.astype("<f4")):
        if binary:
            buf.write(word.encode() + b" " + row.tobytes() + b"\n")
        else:
            buf.write((word + " " + " ".join(f"{v:.6g}" for v in row) + "\n").encode())
    return buf.getvalue()


# --- one reader per kind; each checks what it got --------------------------------------------
def read_idx_file(path: Path) -> None:
    x = read_idx(path)
    assert isinstance(x, np.ndarray) and x.dtype == np.uint8 and 1 <= x.ndim <= 8


def read_image_file(path: Path) -> None:
    for channels in (1, 3):
        pixels = check_image(path, (channels, 28, 28))
        assert pixels.shape == (28, 28, channels) and pixels.dtype == np.uint8
    x = read_image(path, (1, 28, 28))
    assert tuple(x.shape) == (1, 1, 28, 28) and float(x.min()) >= 0 and float(x.max()) <= 1


def read_text_file(path: Path) -> None:
    sentences = list(open_corpus(str(path)))
    assert all(s and all(isinstance(t, str) and t and not t.isspace() for t in s) for s in sentences)


def read_brown_zip(path: Path) -> None:
    sentences = list(BrownCorpus(path))
    assert all(s and all(isinstance(t, str) for t in s) for s in sentences)


def read_w2v(binary: bool | None):
    def read(path: Path) -> None:
        kv = KeyedVectors.load_word2vec_format(path, binary=binary)
        assert kv.vectors.dtype == np.float32 and kv.vectors.shape == (len(kv), kv.vector_size)
        assert len(set(kv.index_to_key)) == len(kv)

    return read


# --- model files: a gates checkpoint, a language-model folder's two files, a training checkpoint ------
@functools.lru_cache(maxsize=None)
def _lm_files() -> dict[str, bytes]:
    """The files of a tiny saved language model, by name (made in a folder that is removed at once)."""
    import torch

    from gatelab.lm import LMConfig, Vocab, build_model, save_model

    torch.manual_seed(0)
    vocab = Vocab.build([["the", "cat", "sat"], ["a", "dog", "ran"]])
    config = LMConfig(hidden=4, samples=2)
    with tempfile.TemporaryDirectory(prefix="gatelab-fuzz-lm-") as tmp:
        folder = save_model(build_model(vocab, config), vocab, config, Path(tmp) / "model")
        return {path.name: path.read_bytes() for path in folder.iterdir()}


def lm_file(name: str) -> bytes:
    return _lm_files()[name]


def read_lm_file(name: str):
    def read(path: Path) -> None:
        from gatelab.lm import load_model

        folder = path.parent / "model"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for other, content in _lm_files().items():
            (folder / other).write_bytes(content)
        shutil.copy(path, folder / name)
        load_model(folder)

    return read


@functools.lru_cache(maxsize=None)
def gates_checkpoint() -> bytes:
    import torch

    from gatelab.gates.train import TrainConfig, build_gated, save_checkpoint

    torch.manual_seed(0)
    config = TrainConfig(model="mlp", epochs=1)
    model = build_gated(config)
    model(torch.zeros(1, 1, 28, 28))
    with tempfile.TemporaryDirectory(prefix="gatelab-fuzz-gates-") as tmp:
        return save_checkpoint(model, config, Path(tmp) / "model.safetensors").read_bytes()


def read_gates_checkpoint(path: Path) -> None:
    from gatelab.gates.train import load_checkpoint

    load_checkpoint(path)


@functools.lru_cache(maxsize=None)
def training_state() -> bytes:
    import torch

    from gatelab.checkpoint import rng_state

    state = {"format": "fuzz", "model": {"w": torch.randn(8, 4)}, "rng": rng_state(), "position": {"epoch": 1}}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def read_training_state(path: Path) -> None:
    from gatelab.checkpoint import load_state

    load_state(path)


# --- skeleton files of gatelab activity: its own .npz and MSR Action3D's text ---------------------
@functools.lru_cache(maxsize=None)
def msr_skeleton_text() -> bytes:
    """The first 6 frames (20 joints x 4 numbers each) of a real MSR Action3D skeleton file."""
    with open(data_dir() / "msr-action3d" / "real_world_coordinates" / "a01_s01_e01_skeleton3D.txt", "rb") as fh:
        return b"".join(fh.readline() for _ in range(6 * 20))


@functools.lru_cache(maxsize=None)
def skeleton_npz() -> bytes:
    from gatelab.activity.readers import read_msr_action3d

    with tempfile.TemporaryDirectory(prefix="gatelab-fuzz-skeleton-") as tmp:
        folder = Path(tmp)
        (folder / "clip.txt").write_bytes(msr_skeleton_text())
        return read_msr_action3d(folder / "clip.txt").save(folder / "clip.npz").read_bytes()


def read_skeleton_file(path: Path) -> None:
    from gatelab.activity.readers import read_skeleton
    from gatelab.activity.skeleton import layout_joints

    seq = read_skeleton(path)
    frames, joints, channels = seq.joints.shape
    assert frames >= 1 and joints == len(layout_joints(seq.layout)) and channels >= 3
    assert seq.valid.shape == (frames, joints) and seq.valid.dtype == bool


def gzipped(content: bytes) -> bytes:
    return gzip.compress(content, compresslevel=1, mtime=0)


class Reader(NamedTuple):
    filename: str
    make: Callable[[], bytes]
    header: int
    read: Callable[[Path], None]
    post: Callable[[bytes], bytes] = bytes


# name -> (file name, valid bytes, header length for header edits, reader[, transform after mutating])
READERS = {
    "idx-raw": ("x-idx3-ubyte", idx_raw, 16, read_idx_file),
    "idx-gz": ("x-idx3-ubyte.gz", idx_gz, 24, read_idx_file),
    "idx-gz-inner": ("x-idx3-ubyte.gz", idx_raw, 16, read_idx_file, gzipped),  # a valid gzip of a bad IDX
    "png": ("digit.png", lambda: image_bytes("PNG"), 40, read_image_file),
    "jpeg": ("digit.jpg", lambda: image_bytes("JPEG"), 40, read_image_file),
    "text": ("corpus.txt", text_bytes, 16, read_text_file),
    "text-gz": ("corpus.txt", text_bytes, 16, read_text_file, gzipped),
    "brown-zip": ("brown.zip", brown_zip, 40, read_brown_zip),
    "w2v-text": ("vectors.txt", lambda: w2v_bytes(False), 8, read_w2v(None)),
    "w2v-binary": ("vectors.bin", lambda: w2v_bytes(True), 8, read_w2v(None)),
    "w2v-binary-forced": ("vectors.bin", lambda: w2v_bytes(True), 8, read_w2v(True)),
    "gates-checkpoint": ("gates.safetensors", gates_checkpoint, 64, read_gates_checkpoint),
    "lm-weights": ("model.safetensors", lambda: lm_file("model.safetensors"), 64, read_lm_file("model.safetensors")),
    "lm-config": ("config.json", lambda: lm_file("config.json"), 64, read_lm_file("config.json")),
    "lm-vocab": ("vocab.json", lambda: lm_file("vocab.json"), 32, read_lm_file("vocab.json")),
    "training-checkpoint": ("state.pt", training_state, 64, read_training_state),
    "skeleton-npz": ("clip.npz", skeleton_npz, 64, read_skeleton_file),
    "skeleton-msr-text": ("clip.txt", msr_skeleton_text, 32, read_skeleton_file),
}
READERS = {name: Reader(*spec) for name, spec in READERS.items()}
