"""Seeded synthetic corpora and mixtures for scale tests (always labelled synthetic where they are used)."""

from __future__ import annotations

import torch

from gatelab.data.bow import BagOfWords
from gatelab.errors import GatelabError


def synthetic_lda(
    n_docs: int = 1000,
    n_words: int = 1000,
    n_topics: int = 10,
    doc_length: int = 100,
    alpha: float = 0.1,
    eta: float = 0.05,
    seed: int = 0,
) -> tuple[BagOfWords, torch.Tensor]:
    """A corpus drawn from LDA itself: ``(corpus, topics)``, ``topics`` the true (K × W) word distributions.

    Each document has ``doc_length`` tokens; θ_d ~ Dir(alpha), β_k ~ Dir(eta).
    """
    for name, value in (("n_docs", n_docs), ("n_words", n_words), ("n_topics", n_topics), ("doc_length", doc_length)):
        if not isinstance(value, int) or value < 1:
            raise GatelabError(f"synthetic_lda: {name} must be an integer >= 1, got {value!r}")
    if not (alpha > 0 and eta > 0):
        raise GatelabError(f"synthetic_lda: alpha and eta must be > 0, got {alpha}, {eta}")
    g = torch.Generator().manual_seed(seed)
    topics = torch._standard_gamma(torch.full((n_topics, n_words), float(eta)), generator=g)
    topics = topics.clamp_min(1e-30) / topics.clamp_min(1e-30).sum(1, keepdim=True)
    theta = torch._standard_gamma(torch.full((n_docs, n_topics), float(alpha)), generator=g)
    theta = theta.clamp_min(1e-30) / theta.clamp_min(1e-30).sum(1, keepdim=True)
    rows = []
    for start in range(0, n_docs, 1024):  # word distributions of 1024 documents at a time bound the memory
        p = theta[start : start + 1024] @ topics
        words = torch.multinomial(p, doc_length, replacement=True, generator=g)
        rows.append(words + torch.arange(start, start + len(p))[:, None] * n_words)  # (doc, word) as doc * W + word
    doc_word = torch.cat(rows).reshape(-1)
    ids, counts = torch.unique(doc_word, return_counts=True)  # sorted, so by document
    corpus = BagOfWords(ids // n_words, ids % n_words, counts.float(), n_docs, n_words)
    return corpus, topics


def synthetic_gmm(
    n: int = 10000, n_components: int = 10, dim: int = 2, separation: float = 6.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, labels, means)``: ``n`` points from ``n_components`` unit-variance Gaussians in ``dim`` dimensions,
    means drawn uniformly in a cube whose side grows with ``separation`` and the number of components."""
    for name, value in (("n", n), ("n_components", n_components), ("dim", dim)):
        if not isinstance(value, int) or value < 1:
            raise GatelabError(f"synthetic_gmm: {name} must be an integer >= 1, got {value!r}")
    if not separation > 0:
        raise GatelabError(f"synthetic_gmm: separation must be > 0, got {separation}")
    g = torch.Generator().manual_seed(seed)
    side = separation * n_components ** (1.0 / dim)
    means = (torch.rand(n_components, dim, generator=g) - 0.5) * side
    labels = torch.randint(n_components, (n,), generator=g)
    x = means[labels] + torch.randn(n, dim, generator=g)
    return x, labels, means
