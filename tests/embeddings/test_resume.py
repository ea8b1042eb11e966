"""Checkpoints and resume of word2vec: exact with one thread, right word count and quality with Hogwild."""

import os
import signal
import time

import numpy as np
import pytest

from gatelab.checkpoint import Interrupted, load_state
from gatelab.embeddings import Word2Vec, _kernel
from gatelab.embeddings.evaluate import evaluate_all


def interrupt_at_chunk(monkeypatch, n):
    """Make the ``n``-th kernel call send this process SIGINT, as a Ctrl-C in the middle of an epoch would."""
    calls = []
    kernel = _kernel.train_chunk

    def train_chunk(*args):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the main thread's handler raises the flag before this chunk ends
        return kernel(*args)

    monkeypatch.setattr(_kernel, "train_chunk", train_chunk)
    return lambda: monkeypatch.setattr(_kernel, "train_chunk", kernel)


def train_interrupted_then_resumed(monkeypatch, tmp_path, sentences, at_chunk, **params):
    ckpt = tmp_path / "w2v.pt"
    first = Word2Vec(**params).build_vocab(sentences)
    undo = interrupt_at_chunk(monkeypatch, at_chunk)
    with pytest.raises(Interrupted) as info:
        first.train(checkpoint=ckpt)
    undo()
    first.close()
    assert info.value.path == ckpt and info.value.exit_code == 130
    position = load_state(ckpt)["position"]
    resumed = Word2Vec(**params).build_vocab(sentences, resume=ckpt)
    resumed.train(checkpoint=ckpt)
    resumed.close()
    return resumed, position


def test_one_thread_resume_equals_an_uninterrupted_run(monkeypatch, tmp_path, planted):
    sents, _ = planted
    params = dict(vector_size=16, window=3, min_count=1, epochs=2, workers=1, seed=4, chunk_words=1000)
    whole = Word2Vec(sents, **params)
    resumed, position = train_interrupted_then_resumed(monkeypatch, tmp_path, sents, 20, **params)
    assert position["epoch"] == 0 and 20 <= position["step"] < 36  # stopped inside the first epoch
    assert resumed.train_stats_["resumed_from_words"] == position["raw_words"] > 0
    np.testing.assert_array_equal(resumed.wv.vectors, whole.wv.vectors)
    np.testing.assert_array_equal(resumed.syn1neg, whole.syn1neg)
    assert resumed.train_stats_["raw_words"] == whole.train_stats_["raw_words"] == 2 * 36000
    assert resumed.train_stats_["effective_words"] == whole.train_stats_["effective_words"]


def test_hogwild_resume_keeps_the_word_count_and_the_ws353_score(monkeypatch, tmp_path, data):
    from gatelab.data.text import ptb_corpus

    corpus = ptb_corpus("train")
    n_words = 887521  # PTB train with Mikolov's preprocessing
    params = dict(vector_size=50, window=5, min_count=5, epochs=2, alpha=0.05, workers=2, seed=1)
    whole = Word2Vec(corpus, **params)
    whole.close()
    resumed, position = train_interrupted_then_resumed(monkeypatch, tmp_path, corpus, 60, **params)
    assert position["epoch"] == 1  # 45 chunks an epoch: stopped in the second one
    assert resumed.train_stats_["raw_words"] == whole.train_stats_["raw_words"] == 2 * n_words

    def ws353(model):
        return next(r["score"] for r in evaluate_all(model.wv, data) if r["name"] == "WS-353")

    assert ws353(whole) > 0.15  # a meaningful score to compare (0.19 here; runs with other seeds differ by 0.01)
    assert abs(ws353(resumed) - ws353(whole)) < 0.02
