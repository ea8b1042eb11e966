"""The compiled local step of ESVI-TOPK on the CPU (numba): each document's γ over its top topics, fused.

The batched torch form of the top-k step (``LDAVI._converge``) gathers, for every nonzero (d, w) of the
corpus, the k values b_{w,t} of the document's top topics t into an (entries × k) tensor, and then
multiplies, sums and scatters it each round: at K = 50 that memory traffic cost more than the sparse
product over all of a block's topics that it replaces. This kernel walks each document's entries once a
round, keeping its k values of a and γ in registers, so a round costs 2·k multiply-adds per entry and
nothing else, and each document stops on its own as soon as it has converged.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _digamma(x: float) -> float:
    """ψ(x) for x > 0: the recurrence ψ(x) = ψ(x + 1) − 1/x up to x ≥ 6, then the asymptotic series."""
    shift = 0.0
    while x < 6.0:
        shift -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    series = f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f / 132))))
    return shift + math.log(x) - 0.5 / x - series


@njit(cache=True, nogil=True)
def topk_converge(pointers, word, count, rest, b, gamma, k, alpha, tol, max_iter):  # pragma: no cover - compiled
    """Run the local updates of ``LDAVI._converge`` with ``topk`` on every document, in place on ``gamma``
    (documents × the block's topics): round 1 over all the block's topics, then over each document's top
    ``k`` of them by γ after round 1 (the others fall to α), until the mean |Δγ_d| is below ``tol`` or
    ``max_iter`` rounds. ``b`` is the words × topics matrix exp(E[log β] − max); ``rest`` (one value per
    entry, or empty) the other blocks' log-normalisers in b's scale, added to each z_dw."""
    n_docs, n_topics = gamma.shape
    has_rest = rest.shape[0] > 0
    a = np.empty(n_topics)
    sums = np.empty(n_topics)
    top = np.empty(k, dtype=np.int64)
    longest = 0
    for d in range(n_docs):
        longest = max(longest, pointers[d + 1] - pointers[d])
    local = np.empty((longest, k))  # b at the document's entries and top topics, gathered once per document
    for d in range(n_docs):
        lo, hi = pointers[d], pointers[d + 1]
        g = gamma[d]
        # round 1: every topic of the block
        peak = -np.inf
        for t in range(n_topics):
            a[t] = _digamma(g[t])
            peak = max(peak, a[t])
        for t in range(n_topics):
            a[t] = math.exp(a[t] - peak)
            sums[t] = 0.0
        for e in range(lo, hi):
            w = word[e]
            z = 0.0
            for t in range(n_topics):
                z += a[t] * b[w, t]
            if has_rest:
                z += math.exp(rest[e] - peak)
            ratio = count[e] / max(z, 1e-30)
            for t in range(n_topics):
                sums[t] += b[w, t] * ratio
        change = 0.0
        for t in range(n_topics):
            new = alpha + a[t] * sums[t]
            change += abs(new - g[t])
            g[t] = new
        order = np.argsort(-g[:n_topics])
        for j in range(k):
            top[j] = order[j]
        for e in range(lo, hi):
            for j in range(k):
                local[e - lo, j] = b[word[e], top[j]]
        dropped = 0.0  # the topics outside the top k fall to α: a change that counts in round 2, as in torch
        for j in range(k, n_topics):
            dropped += abs(g[order[j]] - alpha)
            g[order[j]] = alpha
        rounds = 1
        while change / n_topics >= tol and rounds < max_iter:
            rounds += 1
            peak = -np.inf
            for j in range(k):
                a[j] = _digamma(g[top[j]])
                peak = max(peak, a[j])
            for j in range(k):
                a[j] = math.exp(a[j] - peak)
                sums[j] = 0.0
            for e in range(lo, hi):
                row = local[e - lo]
                z = 0.0
                for j in range(k):
                    z += a[j] * row[j]
                if has_rest:
                    z += math.exp(rest[e] - peak)
                ratio = count[e] / max(z, 1e-30)
                for j in range(k):
                    sums[j] += row[j] * ratio
            change = dropped if rounds == 2 else 0.0
            for j in range(k):
                new = alpha + a[j] * sums[j]
                change += abs(new - g[top[j]])
                g[top[j]] = new
