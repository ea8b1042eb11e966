"""Bag-of-words corpora in the UCI format (``docword.NAME.txt`` and ``vocab.NAME.txt``), read as a stream.

The docword file holds three header lines (documents D, vocabulary size W,
number of nonzero entries NNZ), then one ``doc word count`` line per nonzero,
both ids 1-based. The same format serves KOS, NIPS, Enron, NYTimes and PubMed.
``read_docword`` reads it in blocks of lines, never the whole text at once, and
keeps only the documents in ``docs`` (a rank's shard under torchrun), so a
worker holds only its part of a corpus too large for one machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gatelab.data.store import data_dir
from gatelab.errors import DataMissingError, GatelabError

_BLOCK = 1 << 22  # bytes of text parsed at a time


@dataclass
class BagOfWords:
    """A sparse document × word count matrix in coordinate form, sorted by document.

    ``doc``, ``word`` (int64) and ``count`` (float) have one entry per nonzero;
    ``doc`` is 0-based within this corpus (``first_doc`` is the id of its row 0
    in the file it came from).
    """

    doc: torch.Tensor
    word: torch.Tensor
    count: torch.Tensor
    n_docs: int
    n_words: int
    first_doc: int = 0

    @property
    def nnz(self) -> int:
        return int(self.doc.numel())

    @property
    def n_tokens(self) -> float:
        return float(self.count.sum())

    def doc_lengths(self) -> torch.Tensor:
        return torch.zeros(self.n_docs, dtype=self.count.dtype).index_add_(0, self.doc, self.count)

    def subset(self, docs: torch.Tensor) -> "BagOfWords":
        """The documents ``docs`` (0-based row indices, any order), renumbered 0..len(docs)-1 in that order."""
        return self.subset_with_entries(docs)[0]

    def subset_with_entries(self, docs: torch.Tensor) -> tuple["BagOfWords", torch.Tensor]:
        """``subset(docs)`` and, for each of its entries, the index of that entry here (to gather and scatter
        per-entry values kept alongside this corpus)."""
        docs = torch.as_tensor(docs, dtype=torch.int64, device=self.doc.device)
        if docs.numel() and (docs.min() < 0 or docs.max() >= self.n_docs):
            raise GatelabError(f"document indices must lie in [0, {self.n_docs}), got {docs.min()}..{docs.max()}")
        starts = torch.searchsorted(self.doc, docs)
        stops = torch.searchsorted(self.doc, docs, right=True)
        lengths = stops - starts
        dev = self.doc.device
        new_doc = torch.repeat_interleave(torch.arange(len(docs), device=dev), lengths)
        offsets = torch.repeat_interleave(starts - torch.cumsum(lengths, 0) + lengths, lengths)
        rows = torch.arange(int(lengths.sum()), device=dev) + offsets
        return BagOfWords(new_doc, self.word[rows], self.count[rows], len(docs), self.n_words), rows

    def to_dense(self) -> torch.Tensor:
        dense = torch.zeros(self.n_docs, self.n_words, dtype=self.count.dtype)
        dense[self.doc, self.word] = self.count
        return dense

    @classmethod
    def from_dense(cls, counts) -> "BagOfWords":
        """A corpus from a dense (documents × words) count matrix (numpy, torch or a scipy sparse matrix)."""
        if hasattr(counts, "tocoo"):
            coo = counts.tocoo()
            order = np.lexsort((coo.col, coo.row))
            doc, word, count = coo.row[order], coo.col[order], coo.data[order]
            shape = coo.shape
        else:
            dense = torch.as_tensor(np.asarray(counts) if not torch.is_tensor(counts) else counts)
            if dense.dim() != 2:
                raise GatelabError(f"a count matrix must be 2-D (documents × words), got shape {tuple(dense.shape)}")
            doc, word = torch.nonzero(dense, as_tuple=True)
            count, shape = dense[doc, word], dense.shape
        doc, word = torch.as_tensor(doc, dtype=torch.int64), torch.as_tensor(word, dtype=torch.int64)
        count = torch.as_tensor(count, dtype=torch.float32)
        if not torch.isfinite(count).all() or (count < 0).any():
            raise GatelabError("word counts must be finite and >= 0")
        return cls(doc, word, count, int(shape[0]), int(shape[1]))


def _ints(text: str, path: Path, what: str) -> np.ndarray:
    try:
        return np.array(text.split(), dtype=np.int64)
    except (ValueError, OverflowError):
        raise GatelabError(f"{path}: {what} must be integers; this is not a UCI docword file") from None


def read_header(path: str | os.PathLike) -> tuple[int, int, int]:
    """The ``(documents, words, nonzeros)`` header of a docword file."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(256)
    lines = head.decode("ascii", errors="replace").split("\n")
    if len(lines) < 4 or not head.strip():
        raise GatelabError(
            f"{path} is empty, too short or not a UCI docword file: such a file starts with three lines "
            "(documents, vocabulary size, nonzeros), then 'doc word count' lines"
        )
    values = _ints(" ".join(lines[:3]), path, "the three header lines")
    if len(values) != 3 or (values < 1).any():
        raise GatelabError(f"{path}: the header must be three positive integers (D, W, NNZ), got {lines[:3]}")
    return int(values[0]), int(values[1]), int(values[2])


def read_docword(
    path: str | os.PathLike, docs: tuple[int, int] | None = None, keep: np.ndarray | None = None
) -> BagOfWords:
    """Read a UCI docword file, keeping documents ``docs = (start, stop)`` (0-based, stop excluded; None: all).

    ``keep`` (a boolean array over the file's documents) instead keeps any set of
    documents, renumbered in file order. Malformed lines, ids outside the
    header's ranges, counts below 1, documents out of order and a file shorter
    or longer than its header says are refused.
    """
    path = Path(path)
    n_docs, n_words, nnz = read_header(path)
    start, stop = (0, n_docs) if docs is None else docs
    if not 0 <= start <= stop <= n_docs:
        raise GatelabError(f"document range {start}..{stop} is outside the file's {n_docs} documents")
    if keep is not None:
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (n_docs,):
            raise GatelabError(f"keep must be a boolean array over the {n_docs} documents, got shape {keep.shape}")
        keep = keep & (np.arange(n_docs) >= start) & (np.arange(n_docs) < stop)
    parts, seen, last_doc, rest = [], 0, 0, b""
    with open(path, "rb") as fh:
        for _ in range(3):
            fh.readline()
        while True:
            block = fh.read(_BLOCK)
            text = rest + block
            if block:
                cut = text.rfind(b"\n") + 1
                text, rest = text[:cut], text[cut:]
            if text.strip():
                values = _ints(text.decode("ascii", errors="replace"), path, "'doc word count' entries")
                if len(values) % 3:
                    raise GatelabError(f"{path}: a line near entry {seen + len(values) // 3 + 1} has not 3 numbers")
                triples = values.reshape(-1, 3)
                d, w, c = triples[:, 0], triples[:, 1], triples[:, 2]
                bad = (d < 1) | (d > n_docs) | (w < 1) | (w > n_words) | (c < 1)
                if bad.any():
                    i = int(np.argmax(bad))
                    raise GatelabError(
                        f"{path}: entry {seen + i + 1} is '{d[i]} {w[i]} {c[i]}'; document ids must lie in "
                        f"[1, {n_docs}], word ids in [1, {n_words}] and counts be >= 1 (as the header says)"
                    )
                order = np.concatenate([[last_doc], d])
                if (np.diff(order) < 0).any():
                    raise GatelabError(f"{path}: entries must be sorted by document id (the UCI order)")
                last_doc = int(d[-1])
                seen += len(triples)
                kept = keep[d - 1] if keep is not None else (d - 1 >= start) & (d - 1 < stop)
                if kept.any():
                    parts.append(triples[kept])
            if not block:
                break
    if seen != nnz:
        raise GatelabError(f"{path} has {seen} entries but its header says {nnz}: the file is truncated or damaged")
    triples = np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)
    if keep is not None:  # renumber the kept documents 0..n-1 in file order
        new_id = np.cumsum(keep) - 1
        doc, count_docs, first = new_id[triples[:, 0] - 1], int(keep.sum()), 0
    else:
        doc, count_docs, first = triples[:, 0] - 1 - start, stop - start, start
    return BagOfWords(
        torch.from_numpy(doc),
        torch.from_numpy(triples[:, 1] - 1),
        torch.from_numpy(triples[:, 2]).float(),
        count_docs,
        n_words,
        first_doc=first,
    )


def write_docword(corpus: BagOfWords, path: str | os.PathLike) -> Path:
    """Write ``corpus`` as a UCI docword file (atomically), e.g. a synthetic corpus for the command line."""
    from gatelab.files import atomic_path

    lines = np.stack([corpus.doc.numpy() + 1, corpus.word.numpy() + 1, corpus.count.numpy().astype(np.int64)], 1)
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(f"{corpus.n_docs}\n{corpus.n_words}\n{corpus.nnz}\n")
        np.savetxt(fh, lines, fmt="%d")
    return Path(path)


def read_vocab(path: str | os.PathLike, n_words: int | None = None) -> list[str]:
    """The words of a ``vocab.NAME.txt`` file, one per line (checked against ``n_words`` when given)."""
    path = Path(path)
    try:
        words = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise GatelabError(f"{path} is not a UTF-8 vocabulary file (one word per line)") from None
    words = words[:-1] if words and words[-1] == "" else words
    if n_words is not None and len(words) != n_words:
        raise GatelabError(f"{path} has {len(words)} words but the docword file names {n_words}")
    return words


def uci_paths(name: str = "kos", root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(docword, vocab)`` of UCI bag-of-words set ``name`` under the data folder (``NAME/docword.NAME.txt``)."""
    folder = data_dir(root) / name
    docword, vocab = folder / f"docword.{name}.txt", folder / f"vocab.{name}.txt"
    if not docword.is_file():
        raise DataMissingError(
            f"{docword} is missing; put the UCI bag-of-words files docword.{name}.txt and vocab.{name}.txt "
            f"(archive.ics.uci.edu, 'Bag of Words') in {folder}"
        )
    return docword, vocab
