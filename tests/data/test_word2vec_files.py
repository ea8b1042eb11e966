"""load_word2vec_format on malformed files: GatelabError naming the file and the line, fast, bounded memory."""

import time

import numpy as np
import pytest

from gatelab.embeddings import KeyedVectors
from gatelab.embeddings import keyedvectors as kvmod
from gatelab.errors import GatelabError


def _kv(n=40, d=6, seed=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(n - 3)] + ["naïve", "東京", "x\ny"[0]]
    return KeyedVectors(words, rng.standard_normal((n, d)).astype(np.float32))


@pytest.mark.parametrize("binary", [False, True])
def test_huge_header_is_refused_quickly(tmp_path, binary):
    path = _kv().save_word2vec_format(tmp_path / "v.w2v", binary=binary)
    body = path.read_bytes().split(b"\n", 1)[1]
    path.write_bytes(b"3000000000000 3000000\n" + body)  # 36 TiB of float32 if believed
    start = time.perf_counter()
    with pytest.raises(GatelabError, match=r"v.w2v: the header declares 3000000000000 words of dimension 3000000"):
        KeyedVectors.load_word2vec_format(path)
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("header", [b"99999999999999999999999 100\n", b"10 99999999999\n", b"10 0\n", b"-1 5\n"])
def test_absurd_header_numbers(tmp_path, header):
    path = tmp_path / "v.txt"
    path.write_bytes(header + b"a 1 2 3 4 5\n")
    with pytest.raises(GatelabError, match="v.txt"):
        KeyedVectors.load_word2vec_format(path)


@pytest.mark.parametrize(
    "body,match",
    [
        (b"a 1 2\nb 1 2 3\n", "line 3: expected a word and 2 numbers, got 3"),
        (b"a 1 2\nb 1 zz\n", "line 3: the values are not numbers"),
        (b"a 1 2\n\xff\xfe 1 2\n", "line 3: the word .* is not valid UTF-8"),
        (b"a 1 2\n 1 2\n", "line 3: expected a word and 2 numbers|line 3: the line starts with a space"),
        (b"a 1 2\nb 1 " + b"2" * 10_000 + b"\n", "line 3: longer than"),
        (b"a 1 2\na 3 4\n", "duplicates"),
    ],
)
def test_text_errors_name_the_line(tmp_path, body, match):
    path = tmp_path / "v.txt"
    path.write_bytes(b"2 2\n" + body)
    with pytest.raises(GatelabError, match=f"v.txt.*{match}"):
        KeyedVectors.load_word2vec_format(path, binary=False)


def test_binary_bad_utf8_names_the_entry_and_replace_accepts_it(tmp_path):
    vec = np.ones(3, "<f4").tobytes()
    path = tmp_path / "v.bin"
    path.write_bytes(b"3 3\nok " + vec + b"\nbad\xff " + vec + b"\nfine " + vec + b"\n")
    with pytest.raises(GatelabError, match=r"v.bin entry 2: the word b'bad\\xff' is not valid UTF-8"):
        KeyedVectors.load_word2vec_format(path, binary=True)
    kv = KeyedVectors.load_word2vec_format(path, binary=True, unicode_errors="replace")
    assert kv.index_to_key == ["ok", "bad\ufffd", "fine"]
    with pytest.raises(GatelabError, match="accepted: strict, replace, ignore"):
        KeyedVectors.load_word2vec_format(path, unicode_errors="bogus")


def test_binary_wrong_dimension_in_header(tmp_path):
    path = _kv(d=6).save_word2vec_format(tmp_path / "v.bin", binary=True)
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"40 6\n", b"40 5\n", 1))
    with pytest.raises(GatelabError, match="v.bin"):
        KeyedVectors.load_word2vec_format(path, binary=True)


@pytest.mark.parametrize("block", [7, 64, 1000])
def test_binary_blocks_boundaries_and_gensim_agree(tmp_path, monkeypatch, block):
    gensim = pytest.importorskip("gensim.models")
    kv = _kv(n=200, d=5)
    path = kv.save_word2vec_format(tmp_path / "v.bin", binary=True)
    monkeypatch.setattr(kvmod, "_BLOCK", block)
    ours = KeyedVectors.load_word2vec_format(path)
    g = gensim.KeyedVectors.load_word2vec_format(str(path), binary=True)
    assert ours.index_to_key == list(g.index_to_key) == kv.index_to_key
    assert np.array_equal(ours.vectors, g.vectors) and np.array_equal(ours.vectors, kv.vectors)
    assert KeyedVectors.load_word2vec_format(path, limit=7).index_to_key == kv.index_to_key[:7]
    assert len(KeyedVectors.load_word2vec_format(path, limit=0)) == 0
    with pytest.raises(GatelabError, match="limit must be"):
        KeyedVectors.load_word2vec_format(path, limit=-1)


def test_gensim_binary_without_newlines(tmp_path):
    gensim = pytest.importorskip("gensim.models")
    kv = _kv(n=30, d=4, seed=3)
    g = gensim.KeyedVectors(4)
    g.add_vectors(kv.index_to_key, kv.vectors)
    g.save_word2vec_format(str(tmp_path / "g.bin"), binary=True)
    back = KeyedVectors.load_word2vec_format(tmp_path / "g.bin")
    assert back.index_to_key == kv.index_to_key and np.array_equal(back.vectors, kv.vectors)


def test_truncated_binary_reports_where_it_ends(tmp_path):
    path = _kv(n=40, d=6).save_word2vec_format(tmp_path / "v.bin", binary=True)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * 0.75)])
    with pytest.raises(GatelabError, match=r"v.bin ends (after \d+ of 40 vectors|inside the vector of word \d+)"):
        KeyedVectors.load_word2vec_format(path)
