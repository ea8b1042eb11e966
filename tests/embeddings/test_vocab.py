import threading

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


def build_in_parts(corpus, parts, **params) -> list[EncodedCorpus]:
    """Every shard of ``parts`` built as a torchrun rank builds it, each in a thread, gathering through a barrier."""
    box, built, errors = [None] * parts, [None] * parts, []
    barrier = threading.Barrier(parts, timeout=60)

    def rank(part):
        def gather(counts):
            box[part] = counts
            barrier.wait()
            return list(box)

        try:
            built[part] = EncodedCorpus.build(corpus, shard=(part, parts), gather=gather, **params)
        except Exception as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(p,)) for p in range(parts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for b in built:
            if b is not None:
                b.close()
        raise errors[0]
    return built


def test_shards_count_the_vocabulary_of_one_process_with_its_ties_in_order():
    """Ranks count their own chunks and combine the counts: the vocabulary, ties and cut included, is one process's."""
    rng = np.random.default_rng(3)
    tokens = rng.permutation(np.repeat([f"w{i}" for i in range(30)], 2))  # every word twice: all ties
    sents = [list(tokens[i : i + 4]) + ["the"] for i in range(0, len(tokens), 4)]
    layout = dict(max_sentence_length=3, chunk_words=4)  # a chunk a sentence, cut in pieces of 3
    for max_vocab_size in (None, 12):
        one = EncodedCorpus.build(sents, min_count=2, max_vocab_size=max_vocab_size, **layout)
        assert one.vocab.words[0] == "the"
        for parts in (2, 3):
            shards = build_in_parts(sents, parts, min_count=2, max_vocab_size=max_vocab_size, **layout)
            for part, shard in enumerate(shards):
                assert shard.vocab.words == one.vocab.words and shard.vocab.counts.tolist() == one.vocab.counts.tolist()
                alone = EncodedCorpus.encode(sents, one.vocab, shard=(part, parts), **layout)
                assert (
                    shard.stream.tolist() == alone.stream.tolist() and shard.origins.tolist() == alone.origins.tolist()
                )
                assert shard.lines == len(sents)
                shard.close(), alone.close()
        one.close()
    with pytest.raises(GatelabError, match="min_count=6 leaves an empty vocabulary"):
        build_in_parts(sents[:5], 2, min_count=6, **layout)
    with pytest.raises(GatelabError, match="gather"):
        EncodedCorpus.build(sents, shard=(0, 2))


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


def _tricky_text(seed=0, n_lines=400):
    """Lines mixing Unicode whitespace, case pairs, invalid bytes, blank lines and all three line ends."""
    rng = np.random.default_rng(seed)
    pieces = [
        "a",
        "B",
        "b",
        "Ä",
        "ä",
        "日本",
        "x\u00a0y",
        "p\u2003q",
        "r\x1cs",
        "é",
        "İ",
        "i̇",
        "tab\tx",
        "ZZZZZZZZZZZZ",
    ]
    lines = [
        " ".join(rng.choice(pieces, size=rng.choice([0, 1, 3, 7, 25]))) + " " * rng.integers(3) for _ in range(n_lines)
    ]
    ends = ["\n", "\r\n", "\r"]
    text = "".join(line + ends[rng.integers(3)] for line in lines).encode("utf-8")
    return text.replace("é".encode(), b"\xff\xfe") + "no final newline".encode()  # undecodable bytes; last line open


@pytest.mark.parametrize("lowercase", [False, True])
def test_compiled_text_scan_equals_the_python_path(tmp_path, monkeypatch, lowercase):
    """A UTF-8 LineCorpus is tokenised and counted in compiled code: same vocabulary, ids, sentences and chunks."""
    from gatelab.data.text import LineCorpus
    from gatelab.embeddings import vocab as vocab_module

    path = tmp_path / "tricky.txt"
    path.write_bytes(_tricky_text())
    corpus = LineCorpus(path, lowercase=lowercase)
    as_lists = list(corpus)  # the Python path: str.split() of each text-mode line
    layout = dict(max_sentence_length=7, chunk_words=40)
    monkeypatch.setattr(vocab_module, "_BLOCK", 64)  # many blocks, and tokens that straddle them
    python_path = vocab_module._scan_python
    seen = []
    monkeypatch.setattr(vocab_module, "_scan_python", lambda s, *a: seen.append(type(s)) or python_path(s, *a))
    fast, slow = (
        EncodedCorpus.build(corpus, min_count=2, **layout),
        EncodedCorpus.build(as_lists, min_count=2, **layout),
    )
    try:
        assert fast.vocab.words == slow.vocab.words and list(fast.vocab.counts) == list(slow.vocab.counts)
        assert ("Ä" in fast.vocab.words) != lowercase and "ä" in fast.vocab.words  # merged only when lower-casing
        assert fast.stream.tolist() == slow.stream.tolist() and fast.chunks.tolist() == slow.chunks.tolist()
        assert (fast.n_words, fast.n_sentences) == (slow.n_words, slow.n_sentences)
        whole = [fast.stream[fast.chunks[c] : fast.chunks[c + 1]].tolist() for c in range(fast.n_chunks)]
        for parts in (2, 3):
            for part in range(parts):
                a = EncodedCorpus.encode(corpus, fast.vocab, shard=(part, parts), **layout)
                b = EncodedCorpus.encode(as_lists, fast.vocab, shard=(part, parts), **layout)
                assert a.stream.tolist() == b.stream.tolist() and a.chunks.tolist() == b.chunks.tolist()
                assert a.origins.tolist() == b.origins.tolist() == fast.chunks[part:-1:parts].tolist()
                assert a.total_tokens == b.total_tokens == fast.n_tokens
                # every parts-th chunk of the whole corpus, as one process cuts it
                assert [a.chunk(k).tolist() for k in range(a.n_chunks)] == whole[part::parts], (part, parts)
                a.close(), b.close()
            # torchrun's ranks: each counts and encodes its own shard; the counts combined are the whole corpus's
            for c in (corpus, as_lists):
                for part, shard in enumerate(build_in_parts(c, parts, min_count=2, **layout)):
                    assert (
                        shard.vocab.words == fast.vocab.words
                        and shard.vocab.counts.tolist() == fast.vocab.counts.tolist()
                    )
                    assert [shard.chunk(k).tolist() for k in range(shard.n_chunks)] == whole[part::parts]
                    assert shard.origins.tolist() == fast.chunks[part:-1:parts].tolist()
                    shard.close()
        assert fast.lines == slow.lines == len(as_lists)
        assert set(seen) == {list}  # the text file never took the Python path
    finally:
        fast.close(), slow.close()


def test_a_corpus_of_one_line_splits_into_shards_of_its_chunks(tmp_path):
    """text8 is one line: sharding by lines gave one rank everything and the other nothing; chunks split it evenly."""
    from gatelab.data.text import LineCorpus

    rng = np.random.default_rng(0)
    path = tmp_path / "one-line.txt"
    path.write_text(" ".join(f"w{i}" for i in rng.integers(50, size=5000)))  # no newline at all
    layout = dict(max_sentence_length=300, chunk_words=1000)
    shards = build_in_parts(LineCorpus(path), 2, min_count=1, **layout)
    try:
        assert [s.lines for s in shards] == [1, 1]
        assert [s.n_words for s in shards] == [2600, 2400]  # chunks of 1200 words (4 pieces of 300) and 200
        assert [s.origins.tolist() for s in shards] == [[0, 2408, 4816], [1204, 3612]]  # 301 tokens a piece
        assert shards[0].total_tokens == shards[1].total_tokens == 5000 + 17
    finally:
        for s in shards:
            s.close()
