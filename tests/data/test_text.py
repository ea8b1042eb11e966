"""Text corpora refuse binary, undecodable and empty files with GatelabError, and stay streaming."""

import gzip
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from gatelab.data import data_dir
from gatelab.data.text import SNIFF_BYTES, BrownCorpus, LineCorpus, open_corpus
from gatelab.errors import GatelabError


@pytest.fixture(scope="module")
def ptb_lines():
    with open(data_dir() / "ptb" / "ptb.valid.txt", encoding="utf-8") as fh:
        return [next(fh) for _ in range(50)]


def test_real_text_reads_and_a_few_bad_bytes_are_tolerated(tmp_path, ptb_lines):
    path = tmp_path / "corpus.txt"
    path.write_bytes("".join(ptb_lines).encode() + b"caf\xe9 au lait\n")  # one latin-1 byte
    sentences = list(open_corpus(str(path)))
    assert sentences[: len(ptb_lines)] == [line.split() for line in ptb_lines if line.split()]
    assert sentences[-1] == ["caf\ufffd", "au", "lait"]


def test_png_passed_as_corpus_is_refused(tmp_path):
    path = tmp_path / "picture.txt"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    with pytest.raises(GatelabError, match="picture.txt is a PNG image, not text"):
        open_corpus(str(path))


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "is empty"),
        (gzip.compress(b"hello world\n" * 100), "gzip-compressed"),
        (b"some words\x00\x01\x02 more", "NUL bytes"),
        (bytes(range(128, 256)) * 40, "not utf-8 text"),
    ],
)
def test_binary_undecodable_and_empty_files_are_refused(tmp_path, content, match):
    path = tmp_path / "data.txt"
    path.write_bytes(content)
    with pytest.raises(GatelabError, match=f"data.txt {match}|data.txt.*{match}"):
        LineCorpus(path)


def test_latin1_is_accepted_when_named(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("déjà vu à Montréal\n".encode("latin-1") * 20)
    with pytest.raises(GatelabError, match="not utf-8 text"):
        LineCorpus(path)
    assert next(iter(LineCorpus(path, encoding="latin-1"))) == ["déjà", "vu", "à", "Montréal"]
    with pytest.raises(GatelabError, match="unknown text encoding"):
        LineCorpus(path, encoding="no-such-codec")


def test_only_the_first_block_is_sniffed(tmp_path, monkeypatch):
    """Streaming stays streaming: construction reads one block, not the file."""
    path = tmp_path / "big.txt"
    path.write_bytes(b"word " * (4 * SNIFF_BYTES // 5) + b"\n")
    reads = []
    real_open = open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

        def read(self, n=-1):
            reads.append(n)
            return self.fh.read(n)

    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: Counting(real_open(p, mode, *a, **k)))
    LineCorpus(path)
    assert reads == [SNIFF_BYTES]


def test_a_file_turned_binary_between_passes_is_refused(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a b c\n")
    corpus = LineCorpus(path)
    assert list(corpus) == [["a", "b", "c"]]
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(GatelabError, match="PNG"):
        list(corpus)
    path.unlink()
    with pytest.raises(GatelabError, match="c.txt"):
        list(corpus)


def _brown_zip(path, texts):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in texts.items():
            zf.writestr(name, data)
    return path


def test_brown_zip_streams_and_refuses_corrupt_archives(tmp_path):
    ok = _brown_zip(tmp_path / "b.zip", {"brown/ca01": b"The/at Fulton/np-tl\n\n\tCounty/nn-tl ./.\n"})
    assert list(BrownCorpus(ok)) == [["the", "fulton"], ["county", "."]]
    raw = bytearray(ok.read_bytes())
    start = raw.index(b"brown/ca01") + len(b"brown/ca01")  # the deflated member follows its name
    raw[start + 3] ^= 0x55
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(raw))
    with pytest.raises(GatelabError, match="bad.zip"):
        list(BrownCorpus(bad))
    binary = _brown_zip(tmp_path / "bin.zip", {"brown/ca01": bytes(range(256)) * 4})
    with pytest.raises(GatelabError, match="bin.zip:brown/ca01 holds NUL bytes"):
        list(BrownCorpus(binary))
    notzip = tmp_path / "not.zip"
    notzip.write_bytes(b"hello")
    with pytest.raises(GatelabError, match="not.zip is not a readable zip file"):
        open_corpus(str(notzip))
