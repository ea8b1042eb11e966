"""Word-context co-occurrence counts, GloVe style: the input of WordRank.

Within each sentence, a word and each of the ``window`` words before it co-occur with weight
1/distance, counted in both directions (symmetric), over the vocabulary of words seen at least
``min_count`` times (others are skipped before the window is taken, as in GloVe's ``cooccur``).
The corpus is read once, streaming, into the int32 file of :class:`EncodedCorpus`; a compiled
kernel turns each chunk into distance-tagged pair keys in a bounded buffer, which is sorted,
summed and merged into the running sparse matrix whenever it fills. Memory is the buffer plus
the nonzeros, never the corpus.

The matrix is saved as a ``.npz`` (no pickles) and checked on loading: a truncated, foreign or
inconsistent file is one :class:`GatelabError`.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from gatelab.embeddings.vocab import EncodedCorpus, Vocab
from gatelab.errors import GatelabError
from gatelab.files import atomic_path
from gatelab.progress import bar

FORMAT = "gatelab.cooccurrence/1"
#: keys held before they are sorted and merged (24 bytes each with the reduction buffers)
BUFFER_KEYS = 1 << 22


@dataclass
class CooccurrenceMatrix:
    """A square sparse matrix over ``vocab``: ``values[k]`` is X[rows[k], cols[k]], sorted by (row, col).

    ``window`` and ``min_count`` record how it was counted; ``n_words`` is the corpus's word count.
    """

    vocab: Vocab
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    window: int
    min_count: int
    n_words: int

    @property
    def nnz(self) -> int:
        return len(self.values)

    @property
    def indptr(self) -> np.ndarray:
        """CSR row pointers: the nonzeros of row w are ``indptr[w]:indptr[w + 1]``."""
        return np.searchsorted(self.rows, np.arange(len(self.vocab) + 1)).astype(np.int64)

    def to_scipy(self):
        """The matrix as a ``scipy.sparse.csr_matrix``."""
        from scipy.sparse import csr_matrix

        n = len(self.vocab)
        return csr_matrix((self.values, self.cols, self.indptr), shape=(n, n))

    def save(self, path: str | os.PathLike) -> Path:
        """Write an uncompressed ``.npz`` atomically (words as UTF-8, no pickles)."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                format=np.array(FORMAT),
                words=np.frombuffer("\n".join(self.vocab.words).encode("utf-8", "surrogatepass"), dtype=np.uint8),
                counts=self.vocab.counts,
                rows=self.rows,
                cols=self.cols,
                values=self.values,
                settings=np.array([self.window, self.min_count, self.n_words], dtype=np.int64),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CooccurrenceMatrix":
        """Read a file written by :meth:`save`; anything unreadable or inconsistent is a GatelabError."""
        path = Path(path)
        if not path.is_file():
            raise GatelabError(f"co-occurrence file {path} does not exist")
        accepted = "give a .npz written by `gatelab wordrank cooccur` or CooccurrenceMatrix.save"
        try:
            with np.load(path, allow_pickle=False) as z:
                names = ("format", "words", "counts", "rows", "cols", "values", "settings")
                missing = [k for k in names if k not in z.files]
                if missing:
                    raise GatelabError(
                        f"{path} is not a gatelab co-occurrence file (no {missing[0]!r} array); {accepted}"
                    )
                arrays = {k: z[k] for k in names}
        except GatelabError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            reason = (str(exc).splitlines() or [""])[0][:120]
            raise GatelabError(
                f"{path} is not a readable co-occurrence file ({type(exc).__name__}: {reason}); "
                f"it may be truncated; {accepted}"
            ) from None
        return cls._checked(arrays, path, accepted)

    @classmethod
    def _checked(cls, a: dict, path: Path, accepted: str) -> "CooccurrenceMatrix":
        def bad(what: str):
            return GatelabError(f"{path} is not a valid co-occurrence file: {what}; {accepted}")

        if a["format"].shape != () or str(a["format"]) != FORMAT:
            raise bad(f"format {a['format']!r}, expected {FORMAT!r}")
        if a["words"].dtype != np.uint8 or a["settings"].shape != (3,) or a["settings"].dtype != np.int64:
            raise bad("the word list or settings have the wrong type")
        try:
            words = a["words"].tobytes().decode("utf-8", "surrogatepass").split("\n")
        except UnicodeDecodeError:
            raise bad("the word list is not UTF-8") from None
        counts, rows, cols, values = a["counts"], a["rows"], a["cols"], a["values"]
        n = len(words)
        if counts.shape != (n,) or counts.dtype != np.int64 or np.any(counts < 1):
            raise bad(f"{n} words but counts of shape {counts.shape} and type {counts.dtype}")
        if len(set(words)) != n:
            raise bad("the word list holds duplicates")
        nnz = len(values)
        if not (rows.shape == cols.shape == values.shape == (nnz,)) or values.dtype != np.float64:
            raise bad("rows, cols and values differ in length or type")
        if rows.dtype != np.int32 or cols.dtype != np.int32:
            raise bad("rows and cols must be int32")
        if nnz and (rows.min() < 0 or cols.min() < 0 or rows.max() >= n or cols.max() >= n):
            raise bad(f"an index lies outside the vocabulary of {n} words")
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise bad("a value is not a finite positive number")
        keys = rows.astype(np.int64) * n + cols
        if np.any(np.diff(keys) <= 0):
            raise bad("the entries are not sorted by (row, col) without repeats")
        window, min_count, n_words = (int(v) for v in a["settings"])
        return cls(Vocab(words, counts), rows, cols, values, window, min_count, n_words)


def count_cooccurrences(
    sentences: Iterable[Iterable[str]] | EncodedCorpus,
    window: int = 15,
    min_count: int = 5,
    max_vocab_size: int | None = None,
    max_tokens: int | None = None,
    progress: bool = False,
) -> CooccurrenceMatrix:
    """Count the symmetric, 1/distance-weighted co-occurrences of a corpus (streaming, compiled).

    ``sentences``: token lists (read once and encoded) or an already encoded corpus.
    ``max_tokens`` keeps only the first sentences holding about that many words (a corpus-size
    learning curve). Raises GatelabError for an empty corpus, a vocabulary emptied by
    ``min_count``, or a window outside [1, 255].
    """
    from gatelab.embeddings._wordrank_kernel import DIST_BITS, merge_sorted, reduce_sorted, window_pairs  # numba

    if not 1 <= window < (1 << DIST_BITS):
        raise GatelabError(f"window must be in [1, {(1 << DIST_BITS) - 1}], got {window}")
    if min_count < 1:
        raise GatelabError(f"min_count must be >= 1, got {min_count}")
    if max_tokens is not None and max_tokens < 1:
        raise GatelabError(f"max_tokens must be >= 1, got {max_tokens}")
    own = not isinstance(sentences, EncodedCorpus)
    if own:
        if max_tokens is not None:
            sentences = first_tokens(sentences, max_tokens)
        corpus = EncodedCorpus.build(sentences, min_count=min_count, max_vocab_size=max_vocab_size)
    else:
        corpus = sentences
    try:
        n = len(corpus.vocab)
        if n >= 1 << (63 - DIST_BITS) // 2:
            raise GatelabError(f"a vocabulary of {n} words is too large to count pairs of")
        size = max(BUFFER_KEYS, 2 * window * int(np.diff(corpus.chunks).max(initial=0)))
        keys = np.empty(size, dtype=np.int64)
        tmp_k = np.empty(size, dtype=np.int64)
        tmp_v = np.empty(size, dtype=np.float64)
        tot_k, tot_v = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        filled = 0

        def flush():
            nonlocal tot_k, tot_v, filled
            block = np.sort(keys[:filled])
            m = reduce_sorted(block, tmp_k, tmp_v)
            tot_k, tot_v = merge_sorted(tot_k, tot_v, tmp_k[:m], tmp_v[:m])
            filled = 0

        with bar(total=corpus.n_chunks, desc="co-occurrences", unit="chunk", quiet=not progress) as pbar:
            for k in range(corpus.n_chunks):
                chunk = corpus.chunk(k)
                if filled + 2 * window * len(chunk) > size:
                    flush()
                filled += window_pairs(chunk, window, n, keys[filled:])
                pbar.update(1)
        flush()
        rows = (tot_k // n).astype(np.int32)
        cols = (tot_k % n).astype(np.int32)
        return CooccurrenceMatrix(corpus.vocab, rows, cols, tot_v, window, min_count, corpus.n_words)
    finally:
        if own:
            corpus.close()


def first_tokens(sentences, max_tokens: int):
    """The first sentences of ``sentences``, up to and including the one that reaches ``max_tokens`` words."""
    seen = 0
    for sentence in sentences:
        if seen >= max_tokens:
            return
        yield sentence
        seen += len(sentence)
