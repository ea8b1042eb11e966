"""Turning text into training batches: ids, parallel streams, truncated-BPTT chunks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from gatelab.data.ptb import ptb_path
from gatelab.data.splits import validation_split
from gatelab.data.text import LineCorpus
from gatelab.errors import GatelabError
from gatelab.lm.vocab import EmptyCorpusError, Vocab

IGNORE = -1  # target id of padding positions: no loss, not counted in perplexity


def encode_sentences(sentences: Iterable[list[str]], vocab: Vocab) -> torch.Tensor:
    """One 1-D id tensor for a whole text: ``</s> s1 </s> s2 </s> ...``.

    Every sentence is followed by ``</s>`` and the text starts with one, so the
    model predicts each sentence's first word from a boundary and its end as ``</s>``.
    """
    ids = [vocab.eos_id]
    n = 0
    for sentence in sentences:
        ids.extend(vocab.encode(sentence))
        ids.append(vocab.eos_id)
        n += 1
    if n == 0:
        raise EmptyCorpusError("the corpus is empty: no sentence with a token in it")
    return torch.tensor(ids, dtype=torch.long)


def encode_file(path: str | os.PathLike, vocab: Vocab) -> torch.Tensor:
    """``encode_sentences`` over a tokenised text file (one sentence a line)."""
    try:
        return encode_sentences(LineCorpus(path), vocab)
    except EmptyCorpusError:
        raise EmptyCorpusError(f"{path}: the corpus is empty (no line with a token in it)") from None


@dataclass
class Streams:
    """A text cut into ``B`` parallel streams: ``inputs`` and ``targets`` of shape (L, B).

    ``targets[t, b]`` is the word after ``inputs[t, b]``; padding positions at the
    end of shorter streams have target ``IGNORE``.
    """

    inputs: torch.Tensor
    targets: torch.Tensor

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())

    def chunks(self, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive (inputs, targets) chunks of at most ``bptt`` steps, for truncated BPTT."""
        if bptt < 1:
            raise GatelabError(f"bptt must be at least 1, got {bptt}")
        for start in range(0, self.inputs.shape[0], bptt):
            yield self.inputs[start : start + bptt], self.targets[start : start + bptt]

    def n_chunks(self, bptt: int) -> int:
        return (self.inputs.shape[0] + bptt - 1) // bptt


def make_streams(ids: torch.Tensor, batch_size: int, eos_id: int = 0) -> Streams:
    """Cut ``ids`` into ``batch_size`` parallel streams, each starting at a sentence boundary.

    Cutting at boundaries means no sentence is split across streams, so a model
    that resets its state at ``</s>`` scores the text exactly as it would one
    sentence at a time. Where boundaries are too sparse for that (one long line),
    the streams are equal contiguous pieces instead.
    """
    if batch_size < 1:
        raise GatelabError(f"batch_size must be at least 1, got {batch_size}")
    ids = ids.long().flatten()
    n = ids.numel()
    if n < 2:
        raise GatelabError("the corpus is empty: nothing to predict")
    bounds = torch.nonzero(ids[:-1] == eos_id).flatten()  # where a stream may start
    want = torch.arange(batch_size, dtype=torch.float64) * ((n - 1) / batch_size)
    pos = torch.searchsorted(bounds.double(), want).clamp(max=bounds.numel() - 1)
    starts = torch.unique(bounds[pos]) if bounds.numel() else torch.zeros(0, dtype=torch.long)
    if starts.numel() == 0 or starts[0] != 0:
        starts = torch.cat([torch.zeros(1, dtype=torch.long), starts])
    ends = torch.cat([starts[1:], torch.tensor([n - 1])])
    lengths = ends - starts
    even = (n - 1 + batch_size - 1) // batch_size
    if starts.numel() < batch_size or int(lengths.max()) > 1.1 * even + 50:
        starts = torch.arange(batch_size) * even
        ends = torch.clamp(starts + even, max=n - 1)
        starts = torch.clamp(starts, max=n - 1)
        lengths = ends - starts
    length = int(lengths.max())
    inputs = torch.full((length, batch_size), eos_id, dtype=torch.long)
    targets = torch.full((length, batch_size), IGNORE, dtype=torch.long)
    for b in range(min(batch_size, starts.numel())):
        s, e = int(starts[b]), int(ends[b])
        inputs[: e - s, b] = ids[s:e]
        targets[: e - s, b] = ids[s + 1 : e + 1]
    return Streams(inputs, targets)


@dataclass
class Corpus:
    """A vocabulary and the encoded train / valid / test texts (valid and test may be absent).

    ``valid_source`` says where the validation text came from: a file, or a
    seeded split carved from the training text (and how large it is).
    """

    vocab: Vocab
    train: torch.Tensor
    valid: torch.Tensor | None = None
    test: torch.Tensor | None = None
    valid_source: str | None = None


def resolve_text(spec: str, split: str = "train", root=None) -> str:
    """``ptb`` names the PTB file of ``split``; anything else is a path to a tokenised text file."""
    if spec.lower() == "ptb":
        return str(ptb_path(split, root))
    return spec


def load_corpus(
    train: str,
    valid: str | None = None,
    test: str | None = None,
    min_count: int = 1,
    max_vocab: int | None = None,
    vocab: Vocab | None = None,
    root=None,
    val_size: int | float = 0.05,
    seed: int = 0,
    read_test: bool = True,
) -> Corpus:
    """Build (or reuse) a vocabulary from ``train`` and encode the texts.

    ``train`` may be ``"ptb"``; then valid and test default to PTB's own splits.
    Without a validation text, a seeded validation split of ``val_size``
    sentences (a count, or a fraction of the training sentences) is carved
    from the training text before the vocabulary is built, so that the
    learning-rate schedule and the choice of the best epoch never see the test
    text. ``read_test=False`` leaves the test text unread (``corpus.test`` is
    None): training code reads it once, for the final number, with ``encode_test``.
    """
    is_ptb = train.lower() == "ptb"
    train_path = resolve_text(train, "train", root)
    if is_ptb:
        valid = valid or "ptb"
    source = None
    if valid is None:
        sentences = list(LineCorpus(train_path))
        if not sentences:
            raise EmptyCorpusError(f"{train_path}: the corpus is empty (no line with a token in it)")
        keep, held = validation_split(len(sentences), val_size, seed)
        train_text = [sentences[i] for i in keep.tolist()]
        valid_text = [sentences[i] for i in held.tolist()]
        source = (
            f"{len(valid_text)} of the {len(sentences)} sentences of {train_path} "
            f"(val_size={val_size}, seed={seed}), held out from training"
        )
    else:
        train_text, valid_text = LineCorpus(train_path), None
        source = resolve_text(valid, "valid", root)
    if vocab is None:
        try:
            vocab = Vocab.build(train_text, min_count=min_count, max_size=max_vocab)
        except EmptyCorpusError:
            raise EmptyCorpusError(f"{train_path}: the corpus is empty (no line with a token in it)") from None
    train_ids = encode_sentences(train_text, vocab)
    valid_ids = encode_sentences(valid_text, vocab) if valid_text is not None else encode_file(source, vocab)
    test_ids = encode_test(train, test, vocab, root) if read_test else None
    return Corpus(vocab, train_ids, valid_ids, test_ids, source)


def encode_test(train: str, test: str | None, vocab: Vocab, root=None) -> torch.Tensor | None:
    """The encoded test text: ``test`` if given, PTB's test split when ``train`` is ``ptb``, else None."""
    if test is None and train.lower() == "ptb":
        test = "ptb"
    return encode_file(resolve_text(test, "test", root), vocab) if test else None
