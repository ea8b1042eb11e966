import numpy as np
import pytest

from gatelab.embeddings import KeyedVectors
from gatelab.embeddings.evaluate import rankdata, spearman
from gatelab.errors import GatelabError

gensim_models = pytest.importorskip("gensim.models")


def small_kv(n=50, d=7, seed=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(n - 2)] + ["naïve", "Québec"]
    return KeyedVectors(words, rng.normal(size=(n, d)).astype(np.float32))


@pytest.mark.parametrize("binary", [False, True])
def test_round_trip_and_gensim_reads_our_files(tmp_path, binary):
    kv = small_kv()
    path = kv.save_word2vec_format(tmp_path / "v.w2v", binary=binary)
    back = KeyedVectors.load_word2vec_format(path)  # format detected
    assert back.index_to_key == kv.index_to_key
    np.testing.assert_allclose(back.vectors, kv.vectors, rtol=1e-5 if not binary else 0, atol=1e-6)
    g = gensim_models.KeyedVectors.load_word2vec_format(str(path), binary=binary)
    assert list(g.index_to_key) == kv.index_to_key
    np.testing.assert_allclose(g.vectors, kv.vectors, rtol=1e-5, atol=1e-6)
    assert g.most_similar("w3", topn=3)[0][0] == kv.most_similar("w3", topn=3)[0][0]


@pytest.mark.parametrize("binary", [False, True])
def test_we_read_gensim_files(tmp_path, binary):
    kv = small_kv(seed=1)
    g = gensim_models.KeyedVectors(kv.vector_size)
    g.add_vectors(kv.index_to_key, kv.vectors)
    g.save_word2vec_format(str(tmp_path / "g.w2v"), binary=binary)
    back = KeyedVectors.load_word2vec_format(tmp_path / "g.w2v", binary=binary)
    assert back.index_to_key == kv.index_to_key
    np.testing.assert_allclose(back.vectors, kv.vectors, rtol=1e-5, atol=1e-6)


def test_similarity_queries():
    kv = KeyedVectors(["a", "b", "c", "d"], np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], np.float32))
    assert kv.similarity("a", "d") == pytest.approx(-1)
    assert [w for w, _ in kv.most_similar("a", topn=2)] == ["b", "c"]
    assert kv.most_similar(positive=["c", "a"], negative=["b"], topn=1)[0][0] in {"d", "c", "a", "b"}
    with pytest.raises(KeyError, match="not in vocabulary"):
        kv["zzz"]


@pytest.mark.parametrize(
    "content,match",
    [
        (b"hello world\n", "first line"),
        (b"3 2\na 1 2\nb 1\n", "expected a word and 2 numbers"),
        (b"2 2\na 1 2\n", "truncated text"),
        (b"2 2\na x y\nb 1 2\n", "not numbers"),
        (b"2 4\na " + np.ones(4, "<f4").tobytes() + b"\nb " + b"\x00" * 5, "truncated binary"),
    ],
)
def test_malformed_vectors_files(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(GatelabError, match=match):
        KeyedVectors.load_word2vec_format(path)


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 40).astype(float), rng.normal(size=40)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert list(rankdata([3, 1, 3, 2])) == [3.5, 1, 3.5, 2]


def test_evaluations_agree_with_gensim_and_count_oov(data):
    """Our evaluation of the same vectors gives gensim's numbers; unknown words are counted."""
    rng = np.random.default_rng(0)
    pairs = [line.split("\t")[:2] for line in (data / "word-eval" / "EN-WS-353-ALL.txt").read_text().splitlines()]
    analog = [
        line.split()
        for line in (data / "word-eval" / "questions-words.txt").read_text().splitlines()
        if not line.startswith(":")
    ]
    words = sorted({w.lower() for p in pairs for w in p} | {w.lower() for q in analog[:3000] for w in q})
    words = words[: int(len(words) * 0.8)]  # leave some words out of vocabulary
    kv = KeyedVectors(words, rng.normal(size=(len(words), 20)).astype(np.float32))
    g = gensim_models.KeyedVectors(20)
    g.add_vectors(words, kv.vectors)
    ours = kv.evaluate_word_pairs(data / "word-eval" / "EN-WS-353-ALL.txt")
    (gp, gs, goov) = g.evaluate_word_pairs(str(data / "word-eval" / "EN-WS-353-ALL.txt"))
    assert ours["spearman"] == pytest.approx(gs.statistic if hasattr(gs, "statistic") else gs[0], abs=1e-6)
    assert ours["oov_ratio"] == pytest.approx(goov)
    assert ours["oov"] > 0 and ours["pairs"] + ours["oov"] == 353
    res = kv.evaluate_word_analogies(data / "word-eval" / "questions-words.txt")
    gscore, gsections = g.evaluate_word_analogies(str(data / "word-eval" / "questions-words.txt"))
    assert res["total"]["accuracy"] == pytest.approx(gscore)
    assert res["total"]["correct"] == len(gsections[-1]["correct"])
    assert res["total"]["oov"] > 0
    assert res["total"]["correct"] + res["total"]["incorrect"] + res["total"]["oov"] == 19544


def test_unknown_evaluation_formats(tmp_path):
    kv = small_kv()
    bad_pairs = tmp_path / "pairs.txt"
    bad_pairs.write_text("w1\tw2\n")
    with pytest.raises(GatelabError, match="unknown format"):
        kv.evaluate_word_pairs(bad_pairs)
    bad_analogies = tmp_path / "an.txt"
    bad_analogies.write_text("w1 w2 w3 w4\n")
    with pytest.raises(GatelabError, match="unknown format"):
        kv.evaluate_word_analogies(bad_analogies)
    with pytest.raises(GatelabError, match="does not exist"):
        kv.evaluate_word_pairs(tmp_path / "nothere.txt")
