"""Vocabulary, corpus encoding and the sampling tables of word2vec.

A corpus is read once, streaming: each sentence's tokens get provisional ids in
order of first appearance, written as int32 to a file (``-1`` ends a sentence)
while the counts accumulate. The vocabulary is then sorted by descending
frequency, words under ``min_count`` are dropped, and the file is re-mapped in
place to the final ids (``-2`` marks a dropped word, which still counts as a raw
word for progress). Training epochs read that file by chunks through a memory
map, so no pass after the first touches Python strings.

Under torchrun the vocabulary is counted once (:func:`count_vocab`, rank 0) and
each rank encodes only its shard with it (:meth:`EncodedCorpus.encode`). The file
lives in a temporary folder, or in a given ``workdir`` (beside the output), where
a resumed run finds it again (:meth:`EncodedCorpus.reopen`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from gatelab.errors import GatelabError
from gatelab.files import atomic_path, write_json

SENTENCE_END = -1
DROPPED = -2
_BLOCK = 1 << 20


@dataclass
class Vocab:
    """Frequency-sorted vocabulary: ``words[i]`` occurs ``counts[i]`` times, ``counts`` descending."""

    words: list[str]
    counts: np.ndarray

    def __post_init__(self):
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def fingerprint(self) -> str:
        """A digest of the words and counts: tells whether a saved corpus or checkpoint used this vocabulary."""
        digest = hashlib.sha1("\n".join(self.words).encode("utf-8", "surrogatepass"))
        digest.update(self.counts.astype("<i8").tobytes())
        return digest.hexdigest()

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def keep_probabilities(self, sample: float) -> np.ndarray:
        """word2vec's subsampling: keep word i with probability (sqrt(f/t) + 1) * t/f, capped at 1.

        ``f`` is the word's count and ``t = sample * total`` (the count of the retained words),
        the rule of word2vec.c and gensim. ``sample <= 0`` keeps everything.
        """
        if sample <= 0:
            return np.ones(len(self), dtype=np.float32)
        threshold = sample * self.total
        c = self.counts.astype(np.float64)
        return np.minimum(1.0, (np.sqrt(c / threshold) + 1.0) * threshold / c).astype(np.float32)

    def noise_table(self, power: float = 0.75, size: int | None = None) -> np.ndarray:
        """The unigram^power noise table: word i fills a share of cells proportional to count_i^power.

        Drawing a uniform cell index then samples the noise distribution in O(1). The default
        size is 10M cells (at least 100 per word, at most 100M), fine enough for a vocabulary of
        100k words; small vocabularies get 1000 cells a word (at least 1M), as fine and faster to build.
        """
        if size is None:
            size = int(min(max(10_000_000, 100 * len(self)), 100_000_000, max(1_000_000, 1000 * len(self))))
        p = self.counts.astype(np.float64) ** power
        cdf = np.cumsum(p / p.sum())
        cells = (np.arange(size, dtype=np.float64) + 0.5) / size
        return np.searchsorted(cdf, cells, side="left").clip(max=len(self) - 1).astype(np.int32)


class EncodedCorpus:
    """A corpus encoded to vocabulary ids in an int32 file, read back by memory map.

    Build it with :meth:`build` (count the vocabulary and encode in one pass) or :meth:`encode`
    (a known vocabulary, optionally one shard of the sentences). ``chunks`` holds the token
    offsets where training chunks start and end (always at a sentence end), ``n_words`` the raw
    word count of one epoch. With a ``workdir`` the file (``NAME.int32``, with ``NAME.json``
    describing it) stays there after :meth:`close`, so an interrupted run can :meth:`reopen` it;
    without one it lives in a fresh temporary folder that :meth:`close` removes.
    """

    def __init__(
        self,
        path: Path,
        n_tokens: int,
        n_words: int,
        n_sentences: int,
        chunks: np.ndarray,
        vocab: Vocab,
        tmpdir: Path | None,
    ):
        self.path, self.n_tokens, self.n_words, self.n_sentences = path, n_tokens, n_words, n_sentences
        self.chunks, self.vocab, self._tmpdir = chunks, vocab, tmpdir
        self.stream = (
            np.memmap(path, dtype=np.int32, mode="r", shape=(n_tokens,)) if n_tokens else np.zeros(0, dtype=np.int32)
        )

    @classmethod
    def build(
        cls,
        sentences: Iterable[Iterable[str]],
        min_count: int = 5,
        max_vocab_size: int | None = None,
        max_sentence_length: int = 10000,
        chunk_words: int = 20000,
        workdir: str | os.PathLike | None = None,
        name: str = "corpus",
        key: dict | None = None,
    ) -> "EncodedCorpus":
        """Read ``sentences`` once, build the vocabulary and encode the corpus.

        Sentences longer than ``max_sentence_length`` are cut into pieces of that length.
        ``key`` (any JSON) is stored beside the file for :meth:`reopen` to match.
        Raises GatelabError for an empty corpus or a vocabulary emptied by ``min_count``.
        """
        ids: dict[str, int] = {}
        counts = np.zeros(0, dtype=np.int64)

        def count(block: np.ndarray) -> None:
            nonlocal counts
            bc = np.bincount(block[block >= 0], minlength=len(ids))
            if len(counts) < len(bc):
                counts = np.concatenate([counts, np.zeros(len(bc) - len(counts), dtype=np.int64)])
            counts[: len(bc)] += bc

        def finish(path: Path, n_tokens: int) -> Vocab:
            nonlocal counts
            raw_words = list(ids)
            ids.clear()
            counts = np.concatenate([counts, np.zeros(len(raw_words) - len(counts), dtype=np.int64)])
            vocab, keep = _prune(raw_words, counts, min_count, max_vocab_size)
            remap = np.full(len(raw_words) + 2, DROPPED, dtype=np.int32)
            remap[keep] = np.arange(len(keep), dtype=np.int32)
            remap[SENTENCE_END] = SENTENCE_END  # index -1: the last cell
            mm = np.memmap(path, dtype=np.int32, mode="r+", shape=(n_tokens,))
            for start in range(0, n_tokens, _BLOCK):
                mm[start : start + _BLOCK] = remap[mm[start : start + _BLOCK]]
            mm.flush()
            del mm
            return vocab

        return cls._write(
            sentences,
            lambda i, sentence: [ids.setdefault(w, len(ids)) for w in sentence],
            max_sentence_length,
            chunk_words,
            workdir,
            name,
            key,
            count,
            finish,
        )

    @classmethod
    def encode(
        cls,
        sentences: Iterable[Iterable[str]],
        vocab: Vocab,
        shard: tuple[int, int | None] = (0, None),
        max_sentence_length: int = 10000,
        chunk_words: int = 20000,
        workdir: str | os.PathLike | None = None,
        name: str = "corpus",
        key: dict | None = None,
    ) -> "EncodedCorpus":
        """Encode sentences ``shard[0]`` up to ``shard[1]`` (None: the end) with a known vocabulary.

        Words outside ``vocab`` become dropped words (they still count as raw words).
        """
        start, stop = shard
        index = vocab.index

        def to_ids(i: int, sentence) -> list[int] | None:
            if i < start or (stop is not None and i >= stop):
                return None
            return [index.get(w, DROPPED) for w in sentence]

        return cls._write(
            sentences, to_ids, max_sentence_length, chunk_words, workdir, name, key, None, lambda path, n: vocab
        )

    @classmethod
    def _write(cls, sentences, to_ids, max_sentence_length, chunk_words, workdir, name, key, on_block, finish):
        """Stream the sentences that ``to_ids`` maps (None skips one) to an int32 file, in chunks."""
        if isinstance(sentences, (str, bytes)):
            raise GatelabError("sentences must be an iterable of token lists or a corpus path, not a bare string")
        if workdir is None:
            tmpdir = Path(tempfile.mkdtemp(prefix="gatelab-w2v-"))
            folder = tmpdir
        else:
            tmpdir, folder = None, Path(workdir)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}.json").unlink(missing_ok=True)  # a half-replaced corpus is never reopened
        path = folder / f"{name}.int32"
        try:
            with atomic_path(path) as tmp:
                buf: list[np.ndarray] = []
                buffered = n_tokens = n_words = n_sentences = since_cut = 0
                chunk_bounds = [0]
                with open(tmp, "wb") as out:

                    def flush():
                        nonlocal buf, buffered
                        if buf:
                            block = np.concatenate(buf)
                            buf, buffered = [], 0
                            block.tofile(out)
                            if on_block is not None:
                                on_block(block)

                    for i, sentence in enumerate(sentences):
                        if isinstance(sentence, str):
                            raise GatelabError(
                                "each sentence must be a list of tokens, got a string; "
                                "split it (or pass a path to a text file)"
                            )
                        tokens = to_ids(i, sentence)
                        if tokens is None:
                            continue
                        for begin in range(0, len(tokens), max_sentence_length):
                            piece = tokens[begin : begin + max_sentence_length]
                            arr = np.empty(len(piece) + 1, dtype=np.int32)
                            arr[:-1] = piece
                            arr[-1] = SENTENCE_END
                            buf.append(arr)
                            buffered += len(arr)
                            n_tokens += len(arr)
                            n_words += len(piece)
                            n_sentences += 1
                            since_cut += len(piece)
                            if since_cut >= chunk_words:
                                chunk_bounds.append(n_tokens)
                                since_cut = 0
                        if buffered >= _BLOCK:
                            flush()
                    flush()
                if n_words == 0:
                    raise GatelabError(
                        "the corpus is empty: it holds no tokens "
                        "(give one sentence a line, tokens separated by whitespace)"
                    )
                if chunk_bounds[-1] != n_tokens:
                    chunk_bounds.append(n_tokens)
                vocab = finish(tmp, n_tokens)
            meta = {
                "key": key,
                "vocab": vocab.fingerprint(),
                "n_tokens": n_tokens,
                "n_words": n_words,
                "n_sentences": n_sentences,
                "chunks": chunk_bounds,
            }
            if tmpdir is None:
                write_json(folder / f"{name}.json", meta)
            return cls(path, n_tokens, n_words, n_sentences, np.asarray(chunk_bounds, dtype=np.int64), vocab, tmpdir)
        except BaseException:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
            raise

    @classmethod
    def reopen(cls, workdir: str | os.PathLike, vocab: Vocab, name: str = "corpus", key: dict | None = None):
        """The corpus an earlier run encoded under ``workdir`` with this vocabulary and ``key``, or None."""
        folder = Path(workdir)
        try:
            meta = json.loads((folder / f"{name}.json").read_text())
            path = folder / f"{name}.int32"
            n_tokens = int(meta["n_tokens"])
            chunks = np.asarray(meta["chunks"], dtype=np.int64)
            usable = (
                meta["key"] == key
                and meta["vocab"] == vocab.fingerprint()
                and path.stat().st_size == 4 * n_tokens
                and len(chunks) >= 2
                and chunks[0] == 0
                and chunks[-1] == n_tokens
                and np.all(np.diff(chunks) > 0)
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not usable:
            return None
        return cls(path, n_tokens, int(meta["n_words"]), int(meta["n_sentences"]), chunks, vocab, None)

    def chunk(self, k: int) -> np.ndarray:
        """Tokens of chunk ``k`` (a contiguous run of whole sentences)."""
        return np.ascontiguousarray(self.stream[self.chunks[k] : self.chunks[k + 1]])

    @property
    def n_chunks(self) -> int:
        return len(self.chunks) - 1

    def close(self) -> None:
        """Release the memory map; a corpus built without ``workdir`` also removes its file."""
        self.stream = np.zeros(0, dtype=np.int32)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def count_vocab(
    sentences: Iterable[Iterable[str]], min_count: int = 5, max_vocab_size: int | None = None
) -> tuple[Vocab, int]:
    """Count a corpus without encoding it: the pruned vocabulary and the number of sentences.

    Distributed runs count once (rank 0), broadcast the result and let each rank
    :meth:`EncodedCorpus.encode` its own shard of the sentences.
    """
    counter: Counter = Counter()
    n_sentences = 0
    for sentence in sentences:
        if isinstance(sentence, str):
            raise GatelabError("each sentence must be a list of tokens, got a string; split it")
        counter.update(sentence)
        n_sentences += 1
    if not counter:
        raise GatelabError(
            "the corpus is empty: it holds no tokens (give one sentence a line, tokens separated by whitespace)"
        )
    words = list(counter)
    vocab, _ = _prune(words, np.fromiter(counter.values(), dtype=np.int64, count=len(words)), min_count, max_vocab_size)
    return vocab, n_sentences


def _prune(
    words: list[str], counts: np.ndarray, min_count: int, max_vocab_size: int | None
) -> tuple[Vocab, np.ndarray]:
    """Sort by descending count (ties: first seen first), keep ``min_count`` and above, at most ``max_vocab_size``."""
    order = np.argsort(-counts, kind="stable")
    keep = order[counts[order] >= min_count]
    if max_vocab_size is not None and len(keep) > max_vocab_size:
        keep = keep[:max_vocab_size]
    if len(keep) == 0:
        raise GatelabError(
            f"min_count={min_count} leaves an empty vocabulary: the most frequent word "
            f"occurs {int(counts.max())} times; lower min_count"
        )
    return Vocab([words[i] for i in keep], counts[keep]), keep
