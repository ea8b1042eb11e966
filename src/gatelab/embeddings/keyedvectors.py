"""Trained word vectors: look-up, similarity queries, word2vec file formats and evaluation."""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from gatelab.errors import GatelabError
from gatelab.files import atomic_path


class KeyedVectors:
    """Word vectors keyed by word, in the shape of gensim's ``KeyedVectors``.

    ``vectors[i]`` is the vector of ``index_to_key[i]``; ``key_to_index`` maps back.
    ``counts`` (optional) holds corpus frequencies, in the same order.
    """

    def __init__(self, words: Sequence[str], vectors: np.ndarray, counts: np.ndarray | None = None):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise GatelabError(
                f"vectors must be a (n_words, dim) matrix for {len(words)} words, got shape {vectors.shape}"
            )
        self.index_to_key = list(words)
        self.key_to_index = {w: i for i, w in enumerate(self.index_to_key)}
        if len(self.key_to_index) != len(self.index_to_key):
            raise GatelabError("the word list holds duplicates; each word must appear once")
        self.vectors = vectors
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        self._norms: np.ndarray | None = None

    # --- look-up -------------------------------------------------------------------------
    @property
    def vector_size(self) -> int:
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return len(self.index_to_key)

    def __contains__(self, word: str) -> bool:
        return word in self.key_to_index

    def _index(self, word: str) -> int:
        try:
            return self.key_to_index[word]
        except KeyError:
            raise KeyError(f"word {word!r} not in vocabulary") from None

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self._index(word)]

    def get_vector(self, word: str, norm: bool = False) -> np.ndarray:
        i = self._index(word)
        return self.unit_vectors()[i] if norm else self.vectors[i]

    def unit_vectors(self) -> np.ndarray:
        """The vectors scaled to unit length (cached; recomputed if ``vectors`` is replaced)."""
        if self._norms is None or self._norms.shape != self.vectors.shape:
            norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self._norms = self.vectors / np.maximum(norms, 1e-12)
        return self._norms

    def similarity(self, w1: str, w2: str) -> float:
        """Cosine similarity of two words."""
        u = self.unit_vectors()
        return float(u[self._index(w1)] @ u[self._index(w2)])

    def most_similar(
        self,
        positive: str | Iterable[str] = (),
        negative: str | Iterable[str] = (),
        topn: int = 10,
        restrict_vocab: int | None = None,
    ) -> list[tuple[str, float]]:
        """Words nearest (cosine) to the mean of the unit ``positive`` vectors minus the ``negative`` ones.

        The query words themselves are left out, as in gensim (3CosAdd for analogies).
        """
        positive = [positive] if isinstance(positive, str) else list(positive)
        negative = [negative] if isinstance(negative, str) else list(negative)
        if not positive and not negative:
            raise GatelabError("most_similar needs at least one positive or negative word")
        u = self.unit_vectors()
        query = np.zeros(self.vector_size, dtype=np.float32)
        for w in positive:
            query += u[self._index(w)]
        for w in negative:
            query -= u[self._index(w)]
        query /= max(np.linalg.norm(query), 1e-12)
        limit = len(self) if restrict_vocab is None else min(restrict_vocab, len(self))
        scores = u[:limit] @ query
        exclude = {self.key_to_index[w] for w in positive + negative}
        order = np.argsort(-scores)
        out = []
        for i in order:
            if int(i) in exclude:
                continue
            out.append((self.index_to_key[i], float(scores[i])))
            if len(out) >= topn:
                break
        return out

    # --- files ---------------------------------------------------------------------------
    def save_word2vec_format(self, path: str | os.PathLike, binary: bool = False) -> Path:
        """Write the word2vec format (text, or binary float32 as word2vec.c writes), atomically."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(f"{len(self)} {self.vector_size}\n".encode())
            vecs = self.vectors.astype("<f4", copy=False)
            for word, row in zip(self.index_to_key, vecs):
                if binary:
                    fh.write(word.encode("utf-8") + b" " + row.tobytes() + b"\n")
                else:
                    fh.write((word + " " + " ".join(f"{v:.6g}" for v in row) + "\n").encode("utf-8"))
        return path

    @classmethod
    def load_word2vec_format(
        cls, path: str | os.PathLike, binary: bool | None = None, limit: int | None = None
    ) -> "KeyedVectors":
        """Read a word2vec text or binary file (``binary=None`` detects which).

        Raises GatelabError, naming the file and the line, for a malformed file.
        """
        path = Path(path)
        if not path.is_file():
            raise GatelabError(f"vectors file {path} does not exist")
        with open(path, "rb") as fh:
            header = fh.readline()
            try:
                n, dim = (int(x) for x in header.split())
            except ValueError:
                raise GatelabError(
                    f"{path} is not a word2vec file: its first line must be '<n_words> <dim>', got {header[:60]!r}"
                ) from None
            if n < 0 or dim < 1:
                raise GatelabError(f"{path}: bad header {header.strip()!r}")
            if limit is not None:
                n = min(n, limit)
            if binary is None:
                binary = _looks_binary(fh, dim)
            words: list[str] = []
            vectors = np.empty((n, dim), dtype=np.float32)
            if binary:
                width = 4 * dim
                for i in range(n):
                    word = bytearray()
                    while True:
                        ch = fh.read(1)
                        if not ch:
                            raise GatelabError(f"{path} ends after {i} of {n} vectors (truncated binary file)")
                        if ch == b" ":
                            break
                        if ch != b"\n" or word:
                            word += ch
                    row = fh.read(width)
                    if len(row) != width:
                        raise GatelabError(f"{path} ends inside the vector of word {i} (truncated binary file)")
                    words.append(word.decode("utf-8", errors="replace"))
                    vectors[i] = np.frombuffer(row, dtype="<f4")
            else:
                for i in range(n):
                    line = fh.readline()
                    if not line:
                        raise GatelabError(f"{path} ends after {i} of {n} vectors (truncated text file)")
                    parts = line.decode("utf-8", errors="replace").rstrip("\n").rstrip().split(" ")
                    if len(parts) != dim + 1:
                        raise GatelabError(
                            f"{path} line {i + 2}: expected a word and {dim} numbers, got {len(parts) - 1} numbers"
                        )
                    try:
                        vectors[i] = np.asarray(parts[1:], dtype=np.float32)
                    except ValueError:
                        raise GatelabError(f"{path} line {i + 2}: the values are not numbers") from None
                    words.append(parts[0])
        try:
            return cls(words, vectors)
        except GatelabError as exc:
            raise GatelabError(f"{path}: {exc}") from None

    # --- evaluation ----------------------------------------------------------------------
    def evaluate_word_pairs(
        self,
        path: str | os.PathLike,
        delimiter: str = "\t",
        case_insensitive: bool = True,
        restrict_vocab: int = 300000,
    ) -> dict:
        """Spearman (and Pearson) correlation of cosine similarity with human scores.

        ``path`` holds lines ``word1<TAB>word2<TAB>score`` (``#`` lines are comments), as
        WS-353 and SimLex-999. Pairs with a word outside the (first ``restrict_vocab``) vocabulary
        are skipped, counted and reported. Returns a dict with ``spearman``, ``pearson``,
        ``pairs`` (evaluated), ``oov`` (skipped), ``oov_ratio`` (percent).
        """
        from gatelab.embeddings.evaluate import pearson, read_word_pairs, spearman

        pairs = read_word_pairs(path, delimiter)
        lookup = self._restricted_lookup(restrict_vocab, case_insensitive)
        u = self.unit_vectors()
        sims, gold, oov = [], [], 0
        for a, b, score in pairs:
            if case_insensitive:
                a, b = a.upper(), b.upper()
            ia, ib = lookup.get(a), lookup.get(b)
            if ia is None or ib is None:
                oov += 1
                continue
            sims.append(float(u[ia] @ u[ib]))
            gold.append(score)
        result = {
            "pairs": len(sims),
            "oov": oov,
            "oov_ratio": 100.0 * oov / len(pairs),
            "spearman": float("nan"),
            "pearson": float("nan"),
        }
        if len(sims) >= 2:
            result["spearman"] = spearman(np.array(sims), np.array(gold))
            result["pearson"] = pearson(np.array(sims), np.array(gold))
        return result

    def evaluate_word_analogies(
        self, path: str | os.PathLike, restrict_vocab: int = 300000, case_insensitive: bool = True, batch: int = 512
    ) -> dict:
        """Accuracy on analogy questions ``a b c d`` (a:b :: c:d) by 3CosAdd, as gensim computes it.

        ``path`` is in the Google format: ``: section`` lines and four words a line. Answers are
        searched among the first ``restrict_vocab`` words, excluding a, b and c. Questions with a
        word outside that vocabulary are skipped and counted. Returns ``{"total": {...},
        "sections": [{"section", "correct", "incorrect", "oov", "accuracy"}, ...]}``; accuracy is
        correct / (correct + incorrect), the total leaving out gensim's "total" pseudo-section.
        """
        from gatelab.embeddings.evaluate import read_analogies

        sections = read_analogies(path)
        lookup = self._restricted_lookup(restrict_vocab, case_insensitive)
        limit = min(restrict_vocab, len(self))
        u = self.unit_vectors()[:limit]
        results = []
        for name, questions in sections:
            idx, oov = [], 0
            for q in questions:
                q = [w.upper() for w in q] if case_insensitive else q
                ids = [lookup.get(w) for w in q]
                if any(i is None for i in ids):
                    oov += 1
                else:
                    idx.append(ids)
            correct = 0
            if idx:
                arr = np.asarray(idx, dtype=np.int64)
                for s in range(0, len(arr), batch):
                    a, b, c, d = arr[s : s + batch].T
                    query = u[b] - u[a] + u[c]
                    query /= np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
                    scores = query @ u.T
                    rows = np.arange(len(a))
                    scores[rows, a] = scores[rows, b] = scores[rows, c] = -np.inf
                    correct += int((scores.argmax(axis=1) == d).sum())
            incorrect = len(idx) - correct
            results.append(
                {
                    "section": name,
                    "correct": correct,
                    "incorrect": incorrect,
                    "oov": oov,
                    "accuracy": correct / len(idx) if idx else float("nan"),
                }
            )
        tc = sum(r["correct"] for r in results)
        ti = sum(r["incorrect"] for r in results)
        total = {
            "section": "total",
            "correct": tc,
            "incorrect": ti,
            "oov": sum(r["oov"] for r in results),
            "accuracy": tc / (tc + ti) if tc + ti else float("nan"),
        }
        return {"total": total, "sections": results}

    def _restricted_lookup(self, restrict_vocab: int, case_insensitive: bool) -> dict[str, int]:
        limit = min(restrict_vocab, len(self))
        if not case_insensitive:
            return {w: i for w, i in self.key_to_index.items() if i < limit}
        lookup: dict[str, int] = {}
        for i, w in enumerate(self.index_to_key[:limit]):
            lookup.setdefault(w.upper(), i)  # the most frequent casing wins, as in gensim
        return lookup

    def __repr__(self) -> str:
        return f"KeyedVectors({len(self)} words, dim {self.vector_size})"


def _looks_binary(fh, dim: int) -> bool:
    """Peek after the header: a text file's first row is printable UTF-8; float32 bytes are not.

    (The bytes of ``dim`` little-endian floats are all printable only by rare accident.)
    """
    pos = fh.tell()
    head = fh.read(64 + 4 * dim)
    fh.seek(pos)
    body = head.lstrip(b"\n")
    word_end = body.find(b" ")
    sample = body[word_end + 1 : word_end + 1 + 4 * dim] if word_end >= 0 else body
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return True
    return any(ord(ch) < 32 and ch not in "\n\r\t" for ch in text)
