"""The UCI bag-of-words reader: the real KOS file, shards, and the errors a broken file gives."""

import re

import pytest
import torch

from gatelab.data.bow import BagOfWords, read_docword, read_vocab, uci_paths
from gatelab.errors import GatelabError
from gatelab.vi import completion_split, synthetic_lda


def test_kos_is_read_whole_and_by_shard():
    docword, vocab = uci_paths("kos")
    corpus = read_docword(docword)
    assert (corpus.n_docs, corpus.n_words, corpus.nnz, corpus.n_tokens) == (3430, 6906, 353160, 467714)
    assert len(read_vocab(vocab, corpus.n_words)) == 6906
    first, second = read_docword(docword, (0, 1715)), read_docword(docword, (1715, 3430))
    assert first.nnz + second.nnz == corpus.nnz and second.first_doc == 1715
    assert torch.equal(second.word, corpus.word[first.nnz :]) and int(second.doc.max()) == 1714


def _write(tmp_path, text):
    path = tmp_path / "docword.bad.txt"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, says",
    [
        ("", "empty"),
        ("2\n3\n2\n1 1 1\n2 x 1\n", "integers"),
        ("2\n3\n2\n1 1 1\n2 4 1\n", "word ids in [1, 3]"),
        ("2\n3\n2\n1 1 1\n3 1 1\n", "document ids"),
        ("2\n3\n3\n1 1 1\n2 2 1\n", "truncated"),
        ("2\n3\n2\n2 1 1\n1 2 1\n", "sorted"),
        ("2\n3\n2\n1 1 1\n2 2\n", "3 numbers"),
        ("2\n3\n2\n1 1 0\n2 2 1\n", "counts be >= 1"),
    ],
)
def test_broken_docword_files_are_refused(tmp_path, text, says):
    with pytest.raises(GatelabError, match=re.escape(says)):
        read_docword(_write(tmp_path, text))


def test_subset_and_completion_split_partition_the_words():
    corpus, _ = synthetic_lda(n_docs=30, n_words=40, n_topics=3, doc_length=25, seed=1)
    dense = corpus.to_dense()
    order = torch.tensor([5, 0, 29])
    assert torch.equal(corpus.subset(order).to_dense(), dense[order])
    assert torch.equal(BagOfWords.from_dense(dense).to_dense(), dense)
    observed, scored = completion_split(corpus, seed=3)
    assert torch.equal(observed.to_dense() + scored.to_dense(), dense)
    per_doc = torch.bincount(observed.doc, minlength=30) - torch.bincount(scored.doc, minlength=30)
    assert set(per_doc.tolist()) <= {0, 1}  # each document's distinct words halved
