"""Trained word vectors: look-up, similarity queries, word2vec file formats and evaluation."""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from gatelab.errors import GatelabError, check_choice
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
        cls,
        path: str | os.PathLike,
        binary: bool | None = None,
        limit: int | None = None,
        unicode_errors: str = "strict",
    ) -> "KeyedVectors":
        """Read a word2vec text or binary file (``binary=None`` detects which).

        ``limit`` reads only the first words. Words must be UTF-8 unless ``unicode_errors``
        is ``"replace"`` or ``"ignore"`` (as in gensim). Raises GatelabError, naming the file
        and the line (text) or entry (binary), for a malformed file; a header that declares
        more than the file could hold is refused before anything is allocated.
        """
        path = Path(path)
        if not path.is_file():
            raise GatelabError(f"vectors file {path} does not exist")
        if limit is not None and limit < 0:
            raise GatelabError(f"limit must be >= 0 or None, got {limit}")
        check_choice("unicode_errors", unicode_errors, ("strict", "replace", "ignore"))
        try:
            with open(path, "rb") as fh:
                n, dim = _read_header(fh, path)
                if limit is not None:
                    n = min(n, limit)
                left = os.fstat(fh.fileno()).st_size - fh.tell()
                _check_fits(path, n, dim, left, 2 * dim + 1, "text")  # the least any format needs
                if binary is None:
                    binary = _looks_binary(fh, dim)
                if binary:
                    _check_fits(path, n, dim, left, 4 * dim + 2, "binary")
                    words, vectors = _read_binary(fh, path, n, dim, unicode_errors, _capacity(left, 4 * dim + 2))
                else:
                    words, vectors = _read_text(fh, path, n, dim, unicode_errors, _capacity(left, 2 * dim + 1))
        except OSError as exc:
            raise GatelabError(f"cannot read vectors file {path}: {exc}") from None
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


# --- reading the word2vec formats ---------------------------------------------------------
_BLOCK = 1 << 24  # binary files are read 16 MiB at a time
_MAX_DIM = 1 << 24


def _read_header(fh, path: Path) -> tuple[int, int]:
    header = fh.readline(256)
    parts = header.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise GatelabError(
            f"{path} is not a word2vec file: its first line must be '<n_words> <dim>' (two non-negative "
            f"integers), got {header[:60]!r}"
        )
    n, dim = int(parts[0]), int(parts[1])
    if not 1 <= dim <= _MAX_DIM:
        raise GatelabError(f"{path}: header declares dimension {dim}; accepted 1 to {_MAX_DIM}")
    return n, dim


def _capacity(left: int, per_word: int) -> int:
    """The most entries of at least ``per_word`` bytes (the last newline optional) that ``left`` bytes hold."""
    return (left + 1) // per_word


def _check_fits(path: Path, n: int, dim: int, left: int, per_word: int, fmt: str) -> None:
    """Refuse at once a header whose ``n`` words of ``dim`` numbers need over twice the ``left`` bytes after it.

    A file that holds more than half of what its header declares is read (into at most as many
    rows as it can hold), so that a truncated file is reported where it ends.
    """
    need = n * per_word - 1  # the last newline is optional
    if n and need > 2 * left:
        raise GatelabError(
            f"{path}: the header declares {n} words of dimension {dim}, which needs at least {need} bytes "
            f"in the {fmt} format, but the file holds only {left} after its header (corrupt header or "
            "truncated file)"
        )


def _decode_words(path: Path, raw: list[bytes], unicode_errors: str, where) -> list[str]:
    """Decode the words in one pass (they hold no space, so joining on b' ' is reversible)."""
    joined = b" ".join(raw)
    try:
        text = joined.decode("utf-8", errors=unicode_errors)
    except UnicodeDecodeError as exc:
        i = joined.count(b" ", 0, exc.start)
        word = raw[i].lstrip(b"\n")[:60]
        raise GatelabError(
            f"{path} {where(i)}: the word {word!r} is not valid UTF-8; pass unicode_errors='replace' to accept it"
        ) from None
    return text.split(" ") if raw else []


def _read_binary(fh, path: Path, n: int, dim: int, unicode_errors: str, capacity: int) -> tuple[list[str], np.ndarray]:
    """Entries ``word<space><dim little-endian float32>``, optionally each after a newline.

    Read in large blocks; per entry only a C-level ``find`` and a slice copy run in Python.
    At most ``capacity`` rows (what the file can hold) are allocated.
    """
    width = 4 * dim
    rows = min(n, capacity)
    out = bytearray(rows * width)
    dest = memoryview(out)
    raw_words: list[bytes] = []
    buf, pos, i = b"", 0, 0
    while i < rows:
        block = fh.read(_BLOCK)
        buf = buf[pos:] + block
        pos = 0
        end = len(buf)
        src = memoryview(buf)
        find = buf.find
        while i < rows:
            space = find(b" ", pos)
            if space < 0 or space + 1 + width > end:
                break
            raw_words.append(buf[pos:space])
            dest[i * width : (i + 1) * width] = src[space + 1 : space + 1 + width]
            pos = space + 1 + width
            i += 1
        src.release()
        if not block:
            break
    if i < n:
        if buf.find(b" ", pos) < 0:
            raise GatelabError(f"{path} ends after {i} of {n} vectors (truncated binary file)")
        raise GatelabError(f"{path} ends inside the vector of word {i} (truncated binary file)")
    words = _decode_words(path, raw_words, unicode_errors, lambda k: f"entry {k + 1}")
    if any(w.startswith("\n") for w in words):  # word2vec.c ends each vector with a newline
        words = [w.lstrip("\n") for w in words]
    for k, word in enumerate(words):
        if not word or "\n" in word:
            raise GatelabError(
                f"{path} entry {k + 1}: malformed word {word[:60]!r} (the entries are out of step: wrong "
                "dimension in the header, or a corrupt file)"
            )
    vectors = np.frombuffer(out, dtype="<f4").reshape(n, dim).astype(np.float32, copy=False)
    return words, vectors


def _read_text(fh, path: Path, n: int, dim: int, unicode_errors: str, capacity: int) -> tuple[list[str], np.ndarray]:
    """Lines ``word v1 ... vdim``; each is checked, and errors name the line.

    At most ``capacity`` rows (what the file can hold) are allocated.
    """
    vectors = np.empty((min(n, capacity), dim), dtype=np.float32)
    raw_words: list[bytes] = []
    longest = 64 + 64 * dim  # far more than any number needs; a longer line is corrupt
    for i in range(n):
        line = fh.readline(longest + 1)
        where = f"line {i + 2}"
        if not line or i >= len(vectors):
            raise GatelabError(f"{path} ends after {i} of {n} vectors (truncated text file)")
        if len(line) > longest:
            raise GatelabError(f"{path} {where}: longer than {longest} bytes; not a word2vec text line")
        parts = line.rstrip().split(b" ")
        if len(parts) != dim + 1:
            raise GatelabError(f"{path} {where}: expected a word and {dim} numbers, got {len(parts) - 1} numbers")
        if not parts[0]:
            raise GatelabError(f"{path} {where}: the line starts with a space; expected a word first")
        try:
            vectors[i] = np.asarray([float(x) for x in parts[1:]], dtype=np.float32)
        except ValueError:
            raise GatelabError(f"{path} {where}: the values are not numbers ({line[:60]!r}...)") from None
        raw_words.append(parts[0])
    words = _decode_words(path, raw_words, unicode_errors, lambda k: f"line {k + 2}")
    return words, vectors


def _looks_binary(fh, dim: int) -> bool:
    """Peek after the header: a text file's first row is printable UTF-8; float32 bytes are not.

    (The bytes of ``dim`` little-endian floats are all printable only by rare accident.)
    """
    pos = fh.tell()
    head = fh.read(min(64 + 4 * dim, 1 << 16))
    fh.seek(pos)
    body = head.lstrip(b"\n")
    word_end = body.find(b" ")
    sample = body[word_end + 1 : word_end + 1 + 4 * dim] if word_end >= 0 else body
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return True
    return any(ord(ch) < 32 and ch not in "\n\r\t" for ch in text)
