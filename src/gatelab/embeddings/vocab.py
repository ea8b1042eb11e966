"""Vocabulary, corpus encoding and the sampling tables of word2vec.

A corpus is read once, streaming: each sentence's tokens get provisional ids in
order of first appearance, written as int32 to a file (``-1`` ends a sentence)
while the counts accumulate. The vocabulary is then sorted by descending
frequency, words under ``min_count`` are dropped, and the file is re-mapped in
place to the final ids (``-2`` marks a dropped word, which still counts as a raw
word for progress). Training epochs read that file by chunks through a memory
map, so no pass after the first touches Python strings.

Under torchrun each rank encodes only its shard (:meth:`EncodedCorpus.build` with ``shard``):
every ``parts``-th chunk of the whole corpus, so that the ranks go through the corpus side by side
in its order, as the threads of one process do, and a corpus of one long line splits as well as
any. The ranks count their shards at the same time and combine the counts (:func:`_merge_shards`)
into the vocabulary that one process would count, the same on every rank. The file
lives in a temporary folder, or in a given ``workdir`` (beside the output), where
a resumed run finds it again (:meth:`EncodedCorpus.reopen`).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

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
        table = np.empty(size, dtype=np.int32)
        for start in range(0, size, _BLOCK):  # by blocks: float64 cells for the whole table would cost 16x its size
            cells = (np.arange(start, min(start + _BLOCK, size), dtype=np.float64) + 0.5) / size
            table[start : start + len(cells)] = np.searchsorted(cdf, cells, side="left").clip(max=len(self) - 1)
        return table


class EncodedCorpus:
    """A corpus encoded to vocabulary ids in an int32 file, read back by memory map.

    Build it with :meth:`build` (count the vocabulary and encode in one pass, optionally one shard
    of the chunks) or :meth:`encode` (a known vocabulary). ``chunks`` holds the token
    offsets where training chunks start and end (always at a sentence end), ``n_words`` the raw
    word count of one epoch. ``origins[k]`` is where chunk ``k`` starts in the whole corpus's
    ``total_tokens`` tokens (for a shard; the same as ``chunks[k]`` otherwise), so that the
    learning rate of a shard's chunk is the one a single process would use there. With a
    ``workdir`` the file (``NAME.int32``, with ``NAME.json`` describing it) stays there after
    :meth:`close`, so an interrupted run can :meth:`reopen` it; without one it lives in a fresh
    temporary folder that :meth:`close` removes. ``lines``: the whole corpus's non-blank lines
    (None for a reopened corpus).
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
        ends: np.ndarray | None = None,
        total_tokens: int | None = None,
        lines: int | None = None,
    ):
        self.path, self.n_tokens, self.n_words, self.n_sentences = path, n_tokens, n_words, n_sentences
        self.lines = lines
        self.chunks, self.vocab, self._tmpdir = chunks, vocab, tmpdir
        self.total_tokens = n_tokens if total_tokens is None else total_tokens
        self.origins = chunks[:-1] if ends is None else ends - np.diff(chunks)
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
        shard: tuple[int, int] = (0, 1),
        gather: Callable[[object], list] | None = None,
    ) -> "EncodedCorpus":
        """Read ``sentences`` once, build the vocabulary and encode the corpus (or one ``shard`` of it).

        Sentences longer than ``max_sentence_length`` are cut into pieces of that length.
        ``key`` (any JSON) is stored beside the file for :meth:`reopen` to match. A UTF-8
        :class:`~gatelab.data.text.LineCorpus` is tokenised and counted in compiled code.
        ``shard`` is as in :meth:`encode`; with several parts, ``gather`` takes this process's
        counts and returns every part's, in part order (under torchrun,
        :func:`gatelab.distributed.all_gather_object`), and the vocabulary is the whole corpus's,
        the same in every part, with ties ordered as one process orders them.
        Raises GatelabError for an empty corpus or a vocabulary emptied by ``min_count``.
        """
        if shard[1] > 1 and gather is None:
            raise GatelabError("building the vocabulary from one shard of several needs a gather function")

        def finish(path: Path, n_tokens: int, words: list[str], counts: np.ndarray, layout: "_Layout") -> Vocab:
            words, counts, merged = _merge(words, counts)
            to_shared = None
            if shard[1] > 1:
                first = _first_seen(layout, len(counts), merged)
                words, counts, to_shared = _merge_shards(gather((words, counts, *first)), shard[0])
            vocab, keep = _prune(words, counts, min_count, max_vocab_size)
            remap = np.full(len(words), DROPPED, dtype=np.int32)
            remap[keep] = np.arange(len(keep), dtype=np.int32)
            if to_shared is not None:
                remap = remap[to_shared]
            _remap_file(path, n_tokens, remap if merged is None else remap[merged])
            return vocab

        return cls._write(sentences, shard, max_sentence_length, chunk_words, workdir, name, key, finish)

    @classmethod
    def encode(
        cls,
        sentences: Iterable[Iterable[str]],
        vocab: Vocab,
        shard: tuple[int, int] = (0, 1),
        max_sentence_length: int = 10000,
        chunk_words: int = 20000,
        workdir: str | os.PathLike | None = None,
        name: str = "corpus",
        key: dict | None = None,
    ) -> "EncodedCorpus":
        """Encode shard ``shard[0]`` of ``shard[1]`` (the chunks ``shard[0]``, ``shard[0] + shard[1]``, ...
        of the whole corpus) with a known vocabulary.

        Words outside ``vocab`` become dropped words (they still count as raw words).
        """

        def finish(path: Path, n_tokens: int, words: list[str], counts: np.ndarray, layout: "_Layout") -> Vocab:
            index = vocab.index
            _remap_file(path, n_tokens, np.fromiter((index.get(w, DROPPED) for w in words), np.int32, len(words)))
            return vocab

        return cls._write(sentences, shard, max_sentence_length, chunk_words, workdir, name, key, finish)

    @classmethod
    def _write(cls, sentences, shard, max_sentence_length, chunk_words, workdir, name, key, finish):
        """Stream the chunks of ``shard`` (part, parts) to an int32 file of provisional ids (order of first
        appearance), then let ``finish(path, n_tokens, words, counts, layout)`` re-map it and return the vocabulary."""
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
        part, parts = shard
        if not 0 <= part < parts:
            raise GatelabError(f"shard {part} of {parts} does not exist (parts 0..{parts - 1})")
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as out:
                    layout = _Layout(max_sentence_length, chunk_words)
                    words, counts = _scan(sentences, layout, shard, out)
                if layout.all_tokens == 0:  # (a shard may be empty: more processes than chunks)
                    raise GatelabError(
                        "the corpus is empty: it holds no tokens "
                        "(give one sentence a line, tokens separated by whitespace)"
                    )
                chunk_bounds, ends = layout.chunk_bounds, layout.chunk_ends
                if chunk_bounds[-1] != layout.n_tokens:  # the corpus ends inside a chunk of this shard
                    chunk_bounds.append(layout.n_tokens)
                    ends.append(layout.all_tokens)
                    layout.chunk_seen.append(len(words))
                vocab = finish(tmp, layout.n_tokens, words, counts, layout)
            meta = {
                "key": key,
                "vocab": vocab.fingerprint(),
                "n_tokens": layout.n_tokens,
                "n_words": layout.n_words,
                "n_sentences": layout.n_sentences,
                "chunks": chunk_bounds,
                "ends": ends,
                "total_tokens": layout.all_tokens,
            }
            if tmpdir is None:
                write_json(folder / f"{name}.json", meta)
            chunks, ends = (np.asarray(a, dtype=np.int64) for a in (chunk_bounds, ends))
            n = (layout.n_tokens, layout.n_words, layout.n_sentences)
            return cls(path, *n, chunks, vocab, tmpdir, ends, layout.all_tokens, layout.lines)
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
            ends = np.asarray(meta["ends"], dtype=np.int64)
            total = int(meta["total_tokens"])
            usable = (
                meta["key"] == key
                and meta["vocab"] == vocab.fingerprint()
                and path.stat().st_size == 4 * n_tokens
                and len(chunks) >= 2
                and chunks[0] == 0
                and chunks[-1] == n_tokens
                and np.all(np.diff(chunks) > 0)
                and ends.shape == (len(chunks) - 1,)
                and np.all(ends - np.diff(chunks) >= 0)
                and np.all(ends <= total)
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not usable:
            return None
        return cls(path, n_tokens, int(meta["n_words"]), int(meta["n_sentences"]), chunks, vocab, None, ends, total)

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


class _Layout:
    """What the scan of a corpus found: tokens (words and sentence ends), words, sentence pieces, lines, chunks."""

    def __init__(self, max_sentence_length: int, chunk_words: int):
        self.max_sentence_length, self.chunk_words = max_sentence_length, chunk_words
        self.n_tokens = self.n_words = self.n_sentences = self.lines = self.all_tokens = 0
        self.chunk_bounds = [0]  # in the shard's tokens
        self.chunk_ends = []  # the end of each of the shard's chunks, in the whole corpus's tokens
        self.chunk_seen = []  # the distinct words of the shard met by the end of each of its chunks


def _scan(sentences, layout: _Layout, shard, out) -> tuple[list[str], np.ndarray]:
    """Write the chunks of ``shard`` (part, parts) as provisional ids to ``out`` (None: only count).

    Returns the words in order of first appearance (possibly repeated, see :func:`_merge`)
    and their counts within the shard.
    """
    from gatelab.data.text import LineCorpus

    if isinstance(sentences, LineCorpus) and codecs.lookup(sentences.encoding).name == "utf-8":
        return _scan_compiled(sentences, layout, shard, out)
    return _scan_python(sentences, layout, shard, out)


def _scan_python(sentences, layout: _Layout, shard, out) -> tuple[list[str], np.ndarray]:
    """Any iterable of token lists, one sentence at a time."""
    part, parts = shard
    chunk = 0  # the chunk of the whole corpus being read
    ids: dict[str, int] = {}
    counts = np.zeros(0, dtype=np.int64)
    buf: list[np.ndarray] = []
    buffered = since_cut = 0
    max_len = layout.max_sentence_length

    def flush():
        nonlocal buf, buffered, counts
        if buf:
            block = np.concatenate(buf)
            buf, buffered = [], 0
            if out is not None:
                block.tofile(out)
            bc = np.bincount(block[block >= 0], minlength=len(ids))
            counts = np.concatenate([counts, np.zeros(len(bc) - len(counts), dtype=np.int64)])
            counts += bc

    for i, sentence in enumerate(sentences):
        if isinstance(sentence, str):
            raise GatelabError(
                "each sentence must be a list of tokens, got a string; split it (or pass a path to a text file)"
            )
        layout.lines = i + 1
        sentence = sentence if isinstance(sentence, list) else list(sentence)
        for begin in range(0, len(sentence), max_len):
            piece = sentence[begin : begin + max_len]
            owned = chunk % parts == part
            if owned:
                arr = np.empty(len(piece) + 1, dtype=np.int32)
                arr[:-1] = [ids.setdefault(w, len(ids)) for w in piece]
                arr[-1] = SENTENCE_END
                buf.append(arr)
                buffered += len(arr)
                layout.n_tokens += len(arr)
                layout.n_words += len(piece)
                layout.n_sentences += 1
            layout.all_tokens += len(piece) + 1
            since_cut += len(piece)
            if since_cut >= layout.chunk_words:
                if owned:
                    layout.chunk_bounds.append(layout.n_tokens)
                    layout.chunk_ends.append(layout.all_tokens)
                    layout.chunk_seen.append(len(ids))
                since_cut = 0
                chunk += 1
        if buffered >= _BLOCK:
            flush()
    flush()
    return list(ids), np.concatenate([counts, np.zeros(len(ids) - len(counts), dtype=np.int64)])


def _scan_compiled(corpus, layout: _Layout, shard, out) -> tuple[list[str], np.ndarray]:
    """A UTF-8 text file, tokenised and counted by :func:`gatelab.embeddings._scan.scan` block by block."""
    from gatelab.data.text import check_text
    from gatelab.embeddings import _scan as k

    part, parts = shard
    st = np.zeros(k.STATE_SIZE, dtype=np.int64)
    slots = np.full((0, 4), -1, dtype=np.int64)
    pool = np.zeros(0, dtype=np.uint8)
    out_buf = np.empty(0, dtype=np.int32)
    bounds = ends = seen = np.empty(0, dtype=np.int64)

    def grow(a: np.ndarray, size: int) -> np.ndarray:
        if len(a) >= size:
            return a
        b = np.empty(max(size, 2 * len(a)), dtype=a.dtype)
        b[: len(a)] = a
        return b

    try:
        fh = open(corpus.path, "rb")
    except OSError as exc:
        raise GatelabError(f"cannot read corpus file {corpus.path}: {exc}") from None
    with fh:
        try:
            head = fh.read(_BLOCK)
            check_text(head[: 1 << 16], str(corpus.path), corpus.encoding)
            rest = b""
            block = head
            while True:
                data = rest + block
                if not block:
                    data, rest = data + b"\n", b""  # the last line may lack its newline
                else:
                    cut = max(data.rfind(b"\n"), data.rfind(b" "))
                    if cut < 0:
                        cut = max(
                            data.rfind(c) for c in (b"\t", b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x1f")
                        )
                    if cut < 0:  # one token longer than a block: read on
                        rest, block = data, fh.read(_BLOCK)
                        continue
                    data, rest = data[: cut + 1], data[cut + 1 :]
                buf = np.frombuffer(data, dtype=np.uint8)
                n, i = len(buf), 0
                out_buf, bounds = grow(out_buf, n + 2), grow(bounds, n // 2 + 2)
                ends, seen = grow(ends, n // 2 + 2), grow(seen, n // 2 + 2)
                while i < n:
                    distinct = int(st[k.DISTINCT])
                    if 2 * (distinct + 1) > len(slots):  # the table stays under half full
                        old, slots = slots, np.full((max(1 << 17, 4 * len(slots)), 4), -1, dtype=np.int64)
                        k.rehash(old, slots)
                        del old
                    if int(st[k.POOL]) + (n - i) + 1 > len(pool):
                        pool = grow(pool, int(st[k.POOL]) + 1 + min(n - i, max(1 << 20, len(pool))))
                    i, n_out, n_bounds = k.scan(
                        buf,
                        i,
                        n,
                        slots,
                        pool,
                        st,
                        out_buf,
                        bounds,
                        ends,
                        seen,
                        layout.max_sentence_length,
                        layout.chunk_words,
                        part,
                        parts,
                    )
                    if out is not None:
                        out_buf[:n_out].tofile(out)
                    layout.chunk_bounds.extend(bounds[:n_bounds].tolist())
                    layout.chunk_ends.extend(ends[:n_bounds].tolist())
                    layout.chunk_seen.extend(seen[:n_bounds].tolist())
                if not block:
                    break
                block = fh.read(_BLOCK)
        except OSError as exc:
            raise GatelabError(f"cannot read corpus file {corpus.path}: {exc}") from None
    layout.n_tokens, layout.n_words = int(st[k.TOKENS]), int(st[k.WORDS])
    layout.n_sentences, layout.lines, layout.all_tokens = int(st[k.PIECES]), int(st[k.LINE]), int(st[k.ALL_TOKENS])
    distinct = int(st[k.DISTINCT])
    text = pool[: int(st[k.POOL])].tobytes().decode("utf-8", errors="replace")
    if corpus.lowercase:
        text = text.lower()
    words = text.split("\n")[:distinct]
    counts = np.zeros(distinct, dtype=np.int64)
    used = slots[:, 1] >= 0
    counts[slots[used, 1]] = slots[used, 3]
    return words, counts


def _merge(words: list[str], counts: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Merge repeated words (byte forms that decode or lower-case alike); keeps the first position.

    Returns the distinct words, their summed counts and the map from the given positions to
    the merged ones (None when nothing repeats).
    """
    if len(set(words)) == len(words):  # the usual case, found at a fraction of the cost of the map
        return words, counts, None
    index: dict[str, int] = {}
    ids = np.fromiter((index.setdefault(w, len(index)) for w in words), np.int64, len(words))
    merged = np.zeros(len(index), dtype=np.int64)
    np.add.at(merged, ids, counts)
    return list(index), merged, ids


def _first_seen(layout: _Layout, n: int, merged: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Where each of the ``n`` words of a shard (after :func:`_merge`) first occurs, as a sort key.

    (the end of the chunk, in the whole corpus's tokens, that first holds it; its provisional id).
    Only the shard that owns a chunk compares words by the second part, and there the provisional
    ids are in order of first appearance.
    """
    provisional = np.arange(n) if merged is None else np.unique(merged, return_index=True)[1]  # merged: the first
    chunk = np.searchsorted(np.asarray(layout.chunk_seen, dtype=np.int64), provisional, side="right")
    return np.asarray(layout.chunk_ends, dtype=np.int64)[chunk], provisional


def _merge_shards(parts: list, part: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Combine every shard's (words, counts, chunk end, provisional id) into the whole corpus's words.

    Returns the distinct words in order of first appearance in the whole corpus (as one process
    reading it would meet them), their summed counts, and the position there of each word of
    shard ``part``.
    """
    words = [w for p in parts for w in p[0]]
    index: dict[str, int] = {}
    ids = np.fromiter((index.setdefault(w, len(index)) for w in words), np.int64, len(words))
    counts = np.zeros(len(index), dtype=np.int64)
    np.add.at(counts, ids, np.concatenate([p[1] for p in parts]))
    end, provisional = (np.concatenate([p[k] for p in parts]) for k in (2, 3))
    by_word = np.lexsort((provisional, end, ids))  # each word's occurrences in the shards, the first one first
    first = by_word[np.r_[True, ids[by_word][1:] != ids[by_word][:-1]]]
    order = np.lexsort((provisional[first], end[first]))  # the words by first appearance
    position = np.empty(len(index), dtype=np.int64)
    position[order] = np.arange(len(order))
    start = sum(len(p[0]) for p in parts[:part])
    distinct = list(index)
    return [distinct[i] for i in order], counts[order], position[ids[start : start + len(parts[part][0])]]


def _remap_file(path: Path, n_tokens: int, remap: np.ndarray) -> None:
    """Replace each provisional id ``i >= 0`` of the int32 file by ``remap[i]``, in place, by blocks."""
    table = np.empty(len(remap) + 2, dtype=np.int32)
    table[: len(remap)] = remap
    table[SENTENCE_END] = SENTENCE_END  # index -1: the last cell
    table[DROPPED] = DROPPED
    mm = np.memmap(path, dtype=np.int32, mode="r+", shape=(n_tokens,))
    for start in range(0, n_tokens, _BLOCK):
        mm[start : start + _BLOCK] = table[mm[start : start + _BLOCK]]
    mm.flush()
    del mm


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
