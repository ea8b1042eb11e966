import numpy as np
import pytest

from gatelab.embeddings.vocab import DROPPED, SENTENCE_END, EncodedCorpus, Vocab
from gatelab.errors import GatelabError


class OncePerPass:
    """A re-iterable corpus that generates its sentences lazily and counts its passes."""

    def __init__(self, sentences):
        self.sentences, self.passes = sentences, 0

    def __iter__(self):
        self.passes += 1
        for s in self.sentences:
            yield list(s)


def test_vocab_sorted_pruned_and_encoded():
    sents = [["a", "b", "a", "c"], ["b", "a", "d"], ["a"]]
    corpus = OncePerPass(sents)
    enc = EncodedCorpus.build(corpus, min_count=2)
    try:
        assert corpus.passes == 1
        assert enc.vocab.words == ["a", "b"] and list(enc.vocab.counts) == [4, 2]
        assert enc.n_words == 8 and enc.n_sentences == 3
        expected = [0, 1, 0, DROPPED, SENTENCE_END, 1, 0, DROPPED, SENTENCE_END, 0, SENTENCE_END]
        assert enc.stream.tolist() == expected
        assert enc.chunks[0] == 0 and enc.chunks[-1] == len(expected)
    finally:
        enc.close()


def test_long_sentences_are_cut_and_chunks_end_at_sentences():
    sents = [[f"w{i % 7}" for i in range(25)]] * 4
    enc = EncodedCorpus.build(sents, min_count=1, max_sentence_length=10, chunk_words=30)
    try:
        stream = enc.stream
        ends = np.flatnonzero(stream == SENTENCE_END)
        assert np.diff(np.concatenate([[-1], ends])).max() <= 11  # at most 10 words a piece
        assert enc.n_sentences == 12 and enc.n_words == 100
        for b in enc.chunks[1:]:
            assert stream[b - 1] == SENTENCE_END
        assert sum(len(enc.chunk(k)) for k in range(enc.n_chunks)) == len(stream)
    finally:
        enc.close()


def test_keep_probabilities_and_noise_table():
    v = Vocab(["a", "b", "c"], np.array([1000, 100, 10]))
    p = v.keep_probabilities(1e-3)
    t = 1e-3 * 1110
    np.testing.assert_allclose(p, np.minimum(1, (np.sqrt(v.counts / t) + 1) * t / v.counts), rtol=1e-6)
    assert np.all(v.keep_probabilities(0) == 1)
    table = v.noise_table(size=100000)
    share = np.bincount(table, minlength=3) / len(table)
    want = v.counts**0.75 / (v.counts**0.75).sum()
    np.testing.assert_allclose(share, want, atol=1e-3)


def test_empty_corpus_and_emptied_vocabulary():
    with pytest.raises(GatelabError, match="empty"):
        EncodedCorpus.build([[], []])
    with pytest.raises(GatelabError, match="min_count=5 leaves an empty vocabulary"):
        EncodedCorpus.build([["a", "b"], ["a"]], min_count=5)
    with pytest.raises(GatelabError, match="list of tokens"):
        EncodedCorpus.build(["a sentence as a string"])
