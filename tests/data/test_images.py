"""nice.images: one validator for image files; malformed, wrong-sized and bomb files raise GatelabError."""

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from gatelab.data import data_dir
from gatelab.data.mnist import read_idx
from gatelab.errors import GatelabError
from gatelab.nice.images import check_image, load_inputs, read_image


@pytest.fixture(scope="module")
def digit():
    return read_idx(data_dir() / "mnist" / "t10k-images-idx3-ubyte.gz")[0]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` gray pixels, with a tiny IDAT: a bomb's header."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
def test_real_digit_round_trips(tmp_path, digit, fmt):
    path = tmp_path / f"digit.{fmt.lower()}"
    Image.fromarray(digit).save(path, format=fmt)
    x = read_image(path, (1, 28, 28))
    assert x.shape == (1, 1, 28, 28)
    err = np.abs(x[0, 0].numpy() * 255 - digit)
    if fmt == "JPEG":  # lossy
        assert err.mean() < 3
    else:
        assert err.max() < 1e-3
    assert read_image(path, (1, 28, 28), invert=True).sum() == pytest.approx((1 - x).sum())
    rgb = read_image(path, (3, 28, 28))
    assert rgb.shape == (1, 3, 28, 28)
    assert check_image(path, (1, 28, 28)).dtype == np.uint8


@pytest.mark.parametrize("size", [(100_000, 100_000), (10_000, 10_000)])  # Pillow's error, then its warning
def test_decompression_bomb_is_refused_from_its_header(tmp_path, size):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(*size))
    start = time.perf_counter()
    with pytest.raises(GatelabError, match="bomb.png"):
        read_image(path, (1, *size[::-1]))  # even when it claims the right shape
    assert time.perf_counter() - start < 2
    with pytest.raises(GatelabError, match="bomb.png"):
        read_image(path, (1, 28, 28))


def test_wrong_size_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(4000, 3000))  # its pixel data are missing: decoding would fail
    with pytest.raises(GatelabError, match="big.png is 4000x3000 pixels; the classifier takes 28x28"):
        read_image(path, (1, 28, 28))


def test_truncated_and_garbage_files(tmp_path, digit):
    buf = io.BytesIO()
    Image.fromarray(digit).save(buf, format="PNG")
    png = buf.getvalue()
    for name, content in [
        ("cut.png", png[: len(png) // 2]),
        ("text.png", b"hello"),
        ("empty.png", b""),
        ("flipped.png", png[:60] + bytes([png[60] ^ 0xFF]) + png[61:]),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(GatelabError, match=name):
            read_image(path, (1, 28, 28))
    with pytest.raises(GatelabError, match="does not exist"):
        read_image(tmp_path / "missing.png", (1, 28, 28))
    with pytest.raises(GatelabError, match="does not exist"):
        read_image(tmp_path, (1, 28, 28))


def test_load_inputs_reads_files_through_the_validator(tmp_path, digit):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"d{i}.png")
        Image.fromarray(digit).save(paths[-1])
    x, y, names = load_inputs([str(p) for p in paths], (1, 28, 28))
    assert x.shape == (2, 1, 28, 28) and y is None and names == ["d0", "d1"]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(GatelabError, match="bad.png"):
        load_inputs([str(paths[0]), str(tmp_path / "bad.png")], (1, 28, 28))
