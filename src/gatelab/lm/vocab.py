"""The vocabulary of a language model: words, their ids and training counts."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

import torch

from gatelab.errors import GatelabError
from gatelab.files import write_json

EOS = "</s>"
UNK = "<unk>"


class EmptyCorpusError(GatelabError):
    """The text has no sentence with a token in it."""


class Vocab:
    """Words and ids: ``</s>`` is id 0 (sentence boundary), ``<unk>`` id 1, then words by falling count.

    ``counts[i]`` is how often word ``i`` occurred in the text the vocabulary was
    built from (``</s>`` once per sentence, ``<unk>`` for every word mapped to it);
    the samplers of the output layers draw from these counts.
    """

    def __init__(self, words: list[str], counts: list[int]):
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise GatelabError("a vocabulary is a list of words (strings)")
        if not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise GatelabError("a vocabulary's counts are a list of integers")
        if len(words) < 2 or words[0] != EOS or words[1] != UNK:
            raise GatelabError(f"a vocabulary starts with {EOS!r} and {UNK!r}; got {words[:2]}")
        if len(words) != len(counts):
            raise GatelabError(f"vocabulary has {len(words)} words but {len(counts)} counts")
        self.words = list(words)
        self.counts = [int(c) for c in counts]
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise GatelabError("vocabulary lists a word twice")

    eos_id = 0
    unk_id = 1

    @classmethod
    def build(cls, sentences: Iterable[list[str]], min_count: int = 1, max_size: int | None = None) -> "Vocab":
        """Count the words of ``sentences``; words seen fewer than ``min_count`` times become ``<unk>``.

        ``max_size`` (including ``</s>`` and ``<unk>``) keeps only the most frequent words.
        A literal ``<unk>`` in the text (as in PTB) is the unknown word.
        """
        if min_count < 1:
            raise GatelabError(f"min_count must be at least 1, got {min_count}")
        if max_size is not None and max_size < 3:
            raise GatelabError(f"max_size must be at least 3 (</s>, <unk> and one word), got {max_size}")
        counter: Counter = Counter()
        n_sentences = 0
        for sentence in sentences:
            counter.update(sentence)
            n_sentences += 1
        if n_sentences == 0 or not counter:
            raise EmptyCorpusError("the corpus is empty: no sentence with a token in it")
        unk = counter.pop(UNK, 0)
        counter.pop(EOS, None)  # a literal </s> token is a boundary, counted through n_sentences
        ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        keep = [(w, c) for w, c in ranked if c >= min_count]
        if max_size is not None:
            keep = keep[: max_size - 2]
        kept = {w for w, _ in keep}
        unk += sum(c for w, c in ranked if w not in kept)
        return cls([EOS, UNK] + [w for w, _ in keep], [n_sentences, unk] + [c for _, c in keep])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.words == other.words

    def id(self, word: str) -> int:
        return self.index.get(word, self.unk_id)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        get, unk = self.index.get, self.unk_id
        return [get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[int(i)] for i in ids]

    def counts_tensor(self) -> torch.Tensor:
        return torch.tensor(self.counts, dtype=torch.float64)

    def fingerprint(self) -> str:
        """A short hash of the word list; checkpoints store it to catch a mismatched vocabulary."""
        return hashlib.sha1("\n".join(self.words).encode("utf-8")).hexdigest()[:16]

    def save(self, path: str | os.PathLike) -> Path:
        return write_json(path, {"words": self.words, "counts": self.counts})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return cls(data["words"], data["counts"])
        except FileNotFoundError:
            raise GatelabError(f"vocabulary file {path} does not exist") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise GatelabError(f"{path} is not a gatelab vocabulary file ({exc})") from None
