import numpy as np
import pytest

from gatelab.cli import main
from gatelab.embeddings import cooccurrence
from gatelab.embeddings.cooccurrence import CooccurrenceMatrix, count_cooccurrences
from gatelab.errors import GatelabError

from .conftest import planted_sentences


def dense(m: CooccurrenceMatrix) -> dict:
    return {(m.vocab.words[r], m.vocab.words[c]): v for r, c, v in zip(m.rows, m.cols, m.values)}


def test_counts_match_a_hand_count():
    # "x" occurs once: below min_count 2 it is skipped before the window is taken (GloVe's cooccur)
    sentences = [["a", "b", "x", "c", "a"], ["b", "a"], ["c", "c"]]
    m = count_cooccurrences(sentences, window=2, min_count=2)
    assert m.vocab.words == ["a", "c", "b"] and m.n_words == 9  # by count, ties first seen first
    # sentence 1 without x: a b c a -> (b,a) 1, (c,b) 1, (c,a) 1/2, (a,c) 1, (a,b) 1/2 ; sentence 2: (a,b) 1
    # sentence 3: (c,c) 1, counted in both directions
    expected = {("a", "b"): 2.5, ("a", "c"): 1.5, ("b", "c"): 1.0, ("c", "c"): 2.0}
    for (w, c), v in list(expected.items()):
        expected[(c, w)] = v
    assert dense(m) == pytest.approx(expected)
    assert np.all(np.diff(m.rows.astype(np.int64) * 3 + m.cols) > 0)


def test_streaming_buffer_flushes_give_the_same_matrix(monkeypatch):
    sentences, _ = planted_sentences(n_sentences=400, length=30)
    one = count_cooccurrences(sentences, window=15, min_count=1)
    monkeypatch.setattr(cooccurrence, "BUFFER_KEYS", 1000)  # a flush every chunk or so
    many = count_cooccurrences(sentences, window=15, min_count=1)
    assert np.array_equal(one.rows, many.rows) and np.array_equal(one.cols, many.cols)
    np.testing.assert_allclose(one.values, many.values, rtol=1e-12)
    assert one.to_scipy().toarray() == pytest.approx(one.to_scipy().toarray().T)  # symmetric


def test_max_tokens_keeps_a_prefix():
    sentences = [["a", "b"]] * 10 + [["c", "d"]] * 10
    m = count_cooccurrences(sentences, window=3, min_count=1, max_tokens=7)
    assert m.vocab.words == ["a", "b"] and m.n_words == 8


def test_save_load_round_trip_and_corrupt_files(tmp_path):
    m = count_cooccurrences([["a", "b", "c"], ["b", "c", "a"]], window=2, min_count=1)
    path = m.save(tmp_path / "m.npz")
    back = CooccurrenceMatrix.load(path)
    assert back.vocab.words == m.vocab.words and np.array_equal(back.vocab.counts, m.vocab.counts)
    assert np.array_equal(back.values, m.values) and (back.window, back.min_count) == (2, 1)
    raw = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.npz").write_text("not a matrix\n")
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    bad = dict(np.load(path))
    bad["cols"] = bad["cols"] + 5  # an index outside the vocabulary
    with open(tmp_path / "badindex.npz", "wb") as fh:
        np.savez(fh, **bad)
    for name, match in [
        ("cut.npz", "not a readable co-occurrence file"),
        ("text.npz", "not a readable co-occurrence file"),
        ("foreign.npz", "no 'format' array"),
        ("badindex.npz", "outside the vocabulary"),
        ("missing.npz", "does not exist"),
    ]:
        with pytest.raises(GatelabError, match=match):
            CooccurrenceMatrix.load(tmp_path / name)


def test_bad_corpora_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(GatelabError, match="empty"):
        count_cooccurrences([[], []])
    with pytest.raises(GatelabError, match="empty vocabulary"):
        count_cooccurrences([["a", "b"]], min_count=5)
    with pytest.raises(GatelabError, match="window"):
        count_cooccurrences([["a", "b"]], window=0)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    corrupt = tmp_path / "m.npz"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    for argv in (
        ["wordrank", "cooccur", str(empty), "--out", str(tmp_path / "o.npz")],
        ["wordrank", "train", str(corrupt), "--out", str(tmp_path / "v.bin")],
    ):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("gatelab: error:") and err.count("\n") == 1
    assert not (tmp_path / "v.bin").exists() and not (tmp_path / "o.npz").exists()
