import numpy as np
import pytest

from gatelab.embeddings import Word2Vec
from gatelab.errors import GatelabError

from .conftest import group_margin


@pytest.mark.parametrize("backend,workers", [("numba", 1), ("numba", 2), ("torch", 1)])
def test_planted_groups_are_recovered(planted, backend, workers):
    sents, vocab = planted
    model = Word2Vec(
        sents,
        vector_size=32,
        window=3,
        negative=5,
        sample=0,
        min_count=1,
        epochs=5,
        workers=workers,
        backend=backend,
        seed=3,
        chunk_words=2000,
        windows_per_step=256,
    )
    within, across = group_margin(model.wv, vocab)
    assert within > across + 0.4, (within, across)
    top = [w for w, _ in model.wv.most_similar("g3w0", topn=5)]
    assert all(w.startswith("g3") for w in top), top
    s = model.train_stats_
    assert s["raw_words"] == 5 * sum(map(len, sents)) and s["effective_words"] == s["raw_words"]
    model.close()


def test_same_seed_same_vectors_with_one_thread(planted):
    sents, _ = planted
    kw = dict(vector_size=16, window=2, min_count=1, epochs=1, workers=1, seed=7, sample=1e-3)
    a = Word2Vec(sents[:500], **kw).wv.vectors
    b = Word2Vec(sents[:500], **kw).wv.vectors
    c = Word2Vec(sents[:500], **{**kw, "seed": 8}).wv.vectors
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_path_input_streams_a_file(tmp_path, planted):
    sents, _ = planted
    path = tmp_path / "c.txt"
    path.write_text("\n".join(" ".join(s) for s in sents[:300]) + "\n")
    model = Word2Vec(str(path), vector_size=8, min_count=1, epochs=1, workers=1)
    assert len(model.wv) == 80 and model.train_stats_["raw_words"] == 300 * 12


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(window=0), "window must be >= 1"),
        (dict(vector_size=0), "vector_size"),
        (dict(negative=0), "negative"),
        (dict(workers=0), "workers"),
        (dict(backend="cuda-magic"), "unknown backend"),
        (dict(device="cuda", backend="numba"), "numba backend runs on cpu"),
        (dict(hs=1), "unknown Word2Vec parameter"),
    ],
)
def test_bad_parameters(params, match):
    with pytest.raises(GatelabError, match=match):
        Word2Vec(**params)


def test_bad_corpora():
    with pytest.raises(GatelabError, match="corpus is empty"):
        Word2Vec([[]], min_count=1)
    with pytest.raises(GatelabError, match="empty vocabulary"):
        Word2Vec([["rare", "words"]], min_count=2)
    with pytest.raises(GatelabError, match="does not exist"):
        Word2Vec("/nonexistent/corpus.txt")
    with pytest.raises(GatelabError, match="build_vocab"):
        Word2Vec().train()


def test_one_shot_generator_is_enough(planted):
    sents, _ = planted
    model = Word2Vec((list(s) for s in sents[:200]), vector_size=8, min_count=1, epochs=2, workers=1)
    assert model.train_stats_["raw_words"] == 2 * 200 * 12
