"""Text corpora as streams of tokenised sentences.

Every reader here is a re-iterable object: iterating it yields one sentence at
a time as a list of ``str`` tokens, reading its file afresh on each pass, so a
corpus never has to fit in memory (the gensim ``LineSentence`` shape).

- :class:`LineCorpus`: a plain text file, one sentence a line, tokens split on whitespace.
- :func:`ptb_corpus`: the Penn Treebank (Mikolov's version) under the data folder.
- :class:`BrownCorpus`: the Brown corpus in its NLTK zip (``word/tag`` tokens; tags dropped).
- :class:`Text8Prefix`: the text8 prefix under the data folder, cut into sentences of 1000 words.
- :class:`ZipfCorpus`: a *synthetic*, seeded corpus whose word frequencies follow Zipf's law,
  for throughput measurements only; it carries no meaning.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from gatelab.data.ptb import ptb_path
from gatelab.data.store import RemoteFile, data_dir, fetch
from gatelab.errors import GatelabError

BROWN_FILE = RemoteFile(
    "corpora/brown.zip",
    ("https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/packages/corpora/brown.zip",),
    "a0a8630959d3d937873b1265b0a05497",
)


# How much of a file is looked at to decide that it is text, and how much of it may be undecodable.
SNIFF_BYTES = 1 << 16
MAX_BAD_FRACTION = 0.05
_MAGIC = {
    b"\x1f\x8b": "gzip-compressed (decompress it first)",
    b"PK\x03\x04": "a zip archive (give a .zip in NLTK's Brown packaging, or unpack it)",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"BZh": "bzip2-compressed (decompress it first)",
    b"\xfd7zXZ": "xz-compressed (decompress it first)",
    b"%PDF": "a PDF document",
}


def check_text(head: bytes, name: str, encoding: str = "utf-8", what: str = "corpus file") -> None:
    """Refuse ``head`` (the first block of a file called ``name``) unless it looks like ``encoding`` text.

    Raises GatelabError for an empty block, a known binary format, NUL bytes, or more than
    ``MAX_BAD_FRACTION`` of characters that do not decode. Only the first block is looked at,
    so readers stay streaming.
    """
    accepted = "give a plain text file, one sentence a line, tokens separated by whitespace"
    if not head:
        raise GatelabError(f"{what} {name} is empty; {accepted}")
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            raise GatelabError(f"{what} {name} is {kind}, not text; {accepted}")
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    except LookupError:
        raise GatelabError(f"unknown text encoding {encoding!r} for {name}; use e.g. utf-8 or latin-1") from None
    wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    if b"\x00" in head and not wide:
        raise GatelabError(f"{what} {name} holds NUL bytes: it is a binary file, not text; {accepted}")
    text = decoder.decode(head, final=False)
    bad = text.count("\ufffd")
    if bad > MAX_BAD_FRACTION * max(len(text), 1):
        raise GatelabError(
            f"{what} {name} is not {encoding} text: {bad} of its first {len(text)} characters do not decode; "
            f"{accepted} (or pass the file's encoding)"
        )


def _sniff_file(path: Path, encoding: str, what: str = "corpus file") -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise GatelabError(f"cannot read {what} {path}: {exc}") from None
    check_text(head, str(path), encoding, what)


class LineCorpus:
    """A plain text file, one sentence a line, tokens separated by whitespace.

    Blank lines are skipped. With ``lowercase`` the tokens are lower-cased.
    Lines are read lazily, so the file may be larger than memory. An empty file, or one
    whose first block is binary or mostly undecodable in ``encoding``, is refused with
    GatelabError (see :func:`check_text`); a few undecodable bytes become U+FFFD.
    """

    def __init__(self, path: str | os.PathLike, lowercase: bool = False, encoding: str = "utf-8"):
        self.path = Path(path)
        if not self.path.is_file():
            raise GatelabError(f"corpus file {self.path} does not exist; give a text file with one sentence a line")
        self.lowercase = lowercase
        self.encoding = encoding
        _sniff_file(self.path, encoding)

    def __iter__(self) -> Iterator[list[str]]:
        _sniff_file(self.path, self.encoding)  # it may have changed since the last pass
        try:
            with open(self.path, encoding=self.encoding, errors="replace") as fh:
                for line in fh:
                    if self.lowercase:
                        line = line.lower()
                    tokens = line.split()
                    if tokens:
                        yield tokens
        except OSError as exc:
            raise GatelabError(f"cannot read corpus file {self.path}: {exc}") from None

    def __repr__(self) -> str:
        return f"LineCorpus({str(self.path)!r})"


def ptb_corpus(split: str = "train", root: str | os.PathLike | None = None) -> LineCorpus:
    """The Penn Treebank split (``train``, ``valid`` or ``test``) as a :class:`LineCorpus`."""
    return LineCorpus(ptb_path(split, root))


class Text8Prefix:
    """The text8 prefix under the data folder (one gzipped line of words) as sentences of ``length`` words.

    text8 has no sentence breaks; cutting it at 1000 words is the usual reading (gensim's ``Text8Corpus``), and
    keeps it below gensim's limit of 10,000 words a sentence, beyond which gensim silently truncates.
    """

    def __init__(self, root=None, length: int = 1000):
        self.path = data_dir(root) / "corpora" / "text8-prefix.txt.gz"
        if not self.path.is_file():
            raise GatelabError(f"the text8 prefix is missing: put text8-prefix.txt.gz under {self.path.parent}")
        self.length = length

    def __iter__(self):
        words: list[str] = []
        rest = ""
        try:
            with gzip.open(self.path, "rt", encoding="utf-8", errors="replace") as fh:
                while block := fh.read(1 << 20):
                    parts = (rest + block).split(" ")
                    rest = parts.pop()  # may continue in the next block
                    words.extend(w for w in parts if w)
                    while len(words) >= self.length:
                        yield words[: self.length]
                        words = words[self.length :]
        except (OSError, EOFError, zlib.error) as exc:
            raise GatelabError(f"cannot read {self.path} ({exc}); replace it with an intact copy") from None
        words.extend(rest.split())
        if words:
            yield words

    def __repr__(self) -> str:
        return "text8 prefix"


class BrownCorpus:
    """The Brown corpus from NLTK's ``brown.zip``: one sentence a line of ``word/tag`` tokens.

    Tags are dropped; with ``lowercase`` (the default) words are lower-cased so that they
    match the lower-case evaluation sets. ``categories`` restricts to file prefixes such as
    ``("ca", "cb")`` (news, editorial, ...); None takes all 500 texts.
    """

    _TEXT = re.compile(r"^brown/c[a-r]\d\d$")

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        lowercase: bool = True,
        categories: Iterable[str] | None = None,
        root: str | os.PathLike | None = None,
    ):
        self.path = Path(path) if path else fetch(BROWN_FILE, root)
        if not self.path.is_file():
            raise GatelabError(f"Brown corpus zip {self.path} does not exist")
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = sorted(n for n in zf.namelist() if self._TEXT.match(n))
        except GatelabError:
            raise
        except _ZIP_ERRORS as exc:
            raise GatelabError(
                f"{self.path} is not a readable zip file ({type(exc).__name__}: {exc}); expected NLTK's brown.zip"
            ) from None
        if categories is not None:
            cats = tuple(categories)
            names = [n for n in names if n[len("brown/") :][:2] in cats]
        if not names:
            raise GatelabError(f"{self.path} holds no Brown texts (brown/ca01 ...); expected NLTK's brown.zip")
        self.files = names
        self.lowercase = lowercase

    def __iter__(self) -> Iterator[list[str]]:
        try:
            with zipfile.ZipFile(self.path) as zf:
                for name in self.files:
                    with zf.open(name) as raw:
                        head = raw.read(SNIFF_BYTES)
                        if not head:
                            continue
                        check_text(head, f"{self.path}:{name}", what="Brown text")
                        stream = io.BufferedReader(_Prepend(head, raw))
                        for line in io.TextIOWrapper(stream, encoding="utf-8", errors="replace"):
                            tokens = [tok.rsplit("/", 1)[0] for tok in line.split()]
                            if self.lowercase:
                                tokens = [t.lower() for t in tokens]
                            if tokens:
                                yield tokens
        except GatelabError:
            raise
        except _ZIP_ERRORS as exc:
            raise GatelabError(
                f"{self.path} is a corrupt zip file ({type(exc).__name__}: {exc}); "
                "delete it and run again to download it afresh, or put a good copy of NLTK's brown.zip there"
            ) from None

    def __repr__(self) -> str:
        return f"BrownCorpus({str(self.path)!r}, {len(self.files)} texts)"


# What zipfile raises on a corrupt archive (besides BadZipFile): a bad deflate stream, a short
# read, an unknown compression method, an encrypted member, a mangled header.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    struct.error,
    UnicodeDecodeError,
    ValueError,
)


class _Prepend(io.RawIOBase):
    """A raw stream that yields ``head`` and then the rest of ``tail``: un-reads a sniffed block."""

    def __init__(self, head: bytes, tail):
        self._head, self._tail = memoryview(head), tail

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._tail.read(len(buf))
        buf[: len(data)] = data
        return len(data)


class ZipfCorpus:
    """A SYNTHETIC corpus: seeded i.i.d. tokens whose frequencies follow Zipf's law.

    ``n_tokens`` tokens over a vocabulary of ``vocab_size`` words named ``w0, w1, ...``
    (``w0`` the most frequent; p(rank r) proportional to 1/(r+1)^``exponent``), cut into
    lines of ``line_length`` tokens. It has no semantic structure: use it to measure
    throughput, never quality. Iteration is deterministic for a given ``seed`` and
    generates the tokens block by block, so it never holds the whole corpus.
    """

    synthetic = True

    def __init__(
        self,
        n_tokens: int = 20_000_000,
        vocab_size: int = 200_000,
        line_length: int = 1000,
        seed: int = 0,
        exponent: float = 1.0,
    ):
        if n_tokens < 1 or vocab_size < 1 or line_length < 1:
            raise GatelabError(
                f"ZipfCorpus needs n_tokens, vocab_size and line_length >= 1, "
                f"got {n_tokens}, {vocab_size}, {line_length}"
            )
        self.n_tokens, self.vocab_size, self.line_length = int(n_tokens), int(vocab_size), int(line_length)
        self.seed, self.exponent = int(seed), float(exponent)
        weights = 1.0 / np.arange(1, self.vocab_size + 1, dtype=np.float64) ** self.exponent
        self._cdf = np.cumsum(weights / weights.sum())
        self._cdf[-1] = 1.0
        self.words = np.array([f"w{i}" for i in range(self.vocab_size)], dtype=object)

    def _lines_of_ids(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        left = self.n_tokens
        lines_per_block = max(1, 1_000_000 // self.line_length)
        while left > 0:
            n = min(left, lines_per_block * self.line_length)
            ids = np.searchsorted(self._cdf, rng.random(n), side="right").clip(max=self.vocab_size - 1)
            for start in range(0, n, self.line_length):
                yield ids[start : start + self.line_length]
            left -= n

    def __iter__(self) -> Iterator[list[str]]:
        for ids in self._lines_of_ids():
            yield self.words[ids].tolist()

    def write(self, path: str | os.PathLike) -> Path:
        """Write the corpus as a plain text file (one line per sentence), atomically."""
        from gatelab.files import atomic_path

        with atomic_path(path) as tmp, open(tmp, "w") as fh:
            for ids in self._lines_of_ids():
                fh.write(" ".join(self.words[ids].tolist()))
                fh.write("\n")
        return Path(path)

    def __repr__(self) -> str:
        return (
            f"ZipfCorpus(synthetic: {self.n_tokens} tokens, vocab {self.vocab_size}, "
            f"lines of {self.line_length}, seed {self.seed})"
        )


class ChainCorpus:
    """Several corpora one after the other (e.g. Brown + PTB)."""

    def __init__(self, *corpora: Iterable[list[str]]):
        self.corpora = corpora

    def __iter__(self) -> Iterator[list[str]]:
        for corpus in self.corpora:
            yield from corpus

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.corpora))


def open_corpus(spec: str, root: str | os.PathLike | None = None, lowercase: bool = False):
    """Resolve a corpus named on the command line.

    ``spec`` is a path to a plain text file (one sentence a line) or a ``.zip`` in NLTK's Brown
    packaging, or one of the names ``ptb`` (PTB train), ``brown``, ``brown+ptb``, ``text8`` (the prefix), or
    ``zipf:N[:V]`` for a synthetic Zipf corpus of N tokens over V words (default 200000).
    """
    name = spec.lower()
    if name == "ptb":
        return ptb_corpus("train", root)
    if name == "brown":
        return BrownCorpus(root=root)
    if name in ("brown+ptb", "ptb+brown"):
        return ChainCorpus(BrownCorpus(root=root), ptb_corpus("train", root))
    if name == "text8":
        return Text8Prefix(root)
    if name.startswith("zipf:"):
        parts = name.split(":")[1:]
        try:
            values = [int(float(p)) for p in parts]
        except ValueError:
            raise GatelabError(f"bad synthetic corpus {spec!r}; expected zipf:N_TOKENS[:VOCAB_SIZE]") from None
        if not 1 <= len(values) <= 2:
            raise GatelabError(f"bad synthetic corpus {spec!r}; expected zipf:N_TOKENS[:VOCAB_SIZE]")
        if not 1 <= values[0] <= 10**11 or len(values) == 2 and not 1 <= values[1] <= 10**8:
            raise GatelabError(
                f"synthetic corpus {spec!r} is out of range: 1 to 10^11 tokens over 1 to 10^8 words are accepted"
            )
        return ZipfCorpus(values[0], *(values[1:]))
    path = Path(spec)
    if path.suffix == ".zip":
        return BrownCorpus(path)
    if not path.is_file():
        raise GatelabError(f"corpus {spec!r} is neither a file nor one of: ptb, brown, brown+ptb, text8, zipf:N")
    return LineCorpus(path, lowercase=lowercase)
