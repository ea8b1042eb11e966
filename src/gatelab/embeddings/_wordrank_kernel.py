"""Compiled kernels of WordRank (numba): co-occurrence counting, the ranking SGD and the rank sums for xi.

- :func:`window_pairs` turns one encoded chunk into (word, context, distance) keys, GloVe's
  symmetric window: within a sentence, each word and each of the ``window`` kept words before
  it co-occur with weight 1/distance, in both directions; words outside the vocabulary are
  skipped before the window is taken (they do not count in the distance), as in GloVe's cooccur.
- :func:`reduce_sorted` and :func:`merge_sorted` add up sorted keys, so counting streams through
  a bounded buffer.
- :func:`train_pass` runs WordRank's stochastic updates (plain SGD or AdaGrad) on a slice of the
  (shuffled) nonzeros, split over threads that update the shared matrices without locks (Hogwild, ``prange``).
- :func:`rank_sums` computes, for each nonzero (w, c), the rank surrogate
  ``sum over all contexts c' of l(<u_w, v_c'> - <u_w, v_c>)`` from a block of precomputed scores.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

#: how many bits of a key hold the distance (windows up to 2**DIST_BITS - 1)
DIST_BITS = 8
_LCG_MUL = np.uint64(6364136223846793005)
_LCG_ADD = np.uint64(1442695040888963407)
_SHIFT = np.uint64(33)


@njit(nogil=True, cache=True)
def window_pairs(tokens, window, n_vocab, keys):
    """Write the keys ``((w * n_vocab + c) << DIST_BITS) | d`` of one chunk into ``keys``; return how many.

    ``tokens`` holds vocabulary ids, -1 at sentence ends and -2 for dropped words. ``keys`` must
    hold ``2 * window`` entries per token.
    """
    hist = np.empty(window, dtype=np.int64)
    n_hist = 0  # kept words of this sentence so far (the last ``window`` are in the ring)
    n = 0
    nv = np.int64(n_vocab)
    for t in tokens:
        if t == -1:
            n_hist = 0
            continue
        if t < 0:
            continue
        w = np.int64(t)
        for d in range(1, min(window, n_hist) + 1):
            c = hist[(n_hist - d) % window]
            keys[n] = ((w * nv + c) << DIST_BITS) | d
            keys[n + 1] = ((c * nv + w) << DIST_BITS) | d
            n += 2
        hist[n_hist % window] = w
        n_hist += 1
    return n


@njit(nogil=True, cache=True)
def reduce_sorted(keys, out_keys, out_vals):
    """Sorted distance-tagged keys → unique pair keys and their summed weights 1/d; returns the count."""
    m = -1
    prev = np.int64(-1)
    mask = np.int64((1 << DIST_BITS) - 1)
    for k in keys:
        pair = k >> DIST_BITS
        if pair != prev:
            m += 1
            out_keys[m] = pair
            out_vals[m] = 0.0
            prev = pair
        out_vals[m] += 1.0 / (k & mask)
    return m + 1


@njit(nogil=True, cache=True)
def merge_sorted(ka, va, kb, vb):
    """Merge two sorted, unique key lists, adding the values of keys present in both."""
    out_k = np.empty(len(ka) + len(kb), dtype=np.int64)
    out_v = np.empty(len(ka) + len(kb), dtype=np.float64)
    i = j = n = 0
    while i < len(ka) or j < len(kb):
        if j >= len(kb) or (i < len(ka) and ka[i] < kb[j]):
            out_k[n], out_v[n] = ka[i], va[i]
            i += 1
        elif i >= len(ka) or kb[j] < ka[i]:
            out_k[n], out_v[n] = kb[j], vb[j]
            j += 1
        else:
            out_k[n], out_v[n] = ka[i], va[i] + vb[j]
            i += 1
            j += 1
        n += 1
    return out_k[:n], out_v[:n]


@njit(nogil=True, cache=True, inline="always")
def _lcg(r):
    return r * _LCG_MUL + _LCG_ADD


@njit(nogil=True, cache=True, inline="always")
def _slope(u, vc, vn, mult, logistic):
    """``mult * l'(<u, vn> - <u, vc>)`` for the hinge ``max(0, x + 1)`` or the logistic ``log2(1 + 2**x)``;
    -1 where the hinge is flat (no step at all)."""
    x = np.float32(0.0)
    for k in range(u.shape[0]):
        x += u[k] * (vn[k] - vc[k])
    if logistic:
        return np.float32(mult / (1.0 + 2.0 ** (-x)))
    return np.float32(mult) if x > -1.0 else np.float32(-1.0)


@njit(nogil=True, cache=True, inline="always")
def sgd_step(u, vc, vn, mult, logistic):
    """One ranking update for word row ``u``, observed context ``vc`` and sampled context ``vn``.

    It descends ``mult * l(<u, vn> - <u, vc>)``, all three rows moved from their values before the step.
    """
    g = _slope(u, vc, vn, mult, logistic)
    if g < 0:
        return
    for k in range(u.shape[0]):
        uk = u[k]
        u[k] -= g * (vn[k] - vc[k])
        vc[k] += g * uk
        vn[k] -= g * uk


@njit(nogil=True, cache=True, inline="always")
def adagrad_step(u, vc, vn, hu, hc, hn, weight, lr, reg, logistic):
    """:func:`sgd_step` with AdaGrad: each coordinate's gradient (``weight`` times the loss's) is added
    squared to its sum (``hu``, ``hc``, ``hn``) first, and the step is ``lr`` times the gradient over
    the root of that sum, so the first step of a coordinate is ``lr`` whatever the weight's scale."""
    g = _slope(u, vc, vn, weight, logistic)
    if g < 0:
        return
    for k in range(u.shape[0]):
        uk = u[k]
        du = g * (vn[k] - vc[k]) + reg * uk
        dc = -g * uk + reg * vc[k]
        dn = g * uk + reg * vn[k]
        hu[k] += du * du
        hc[k] += dc * dc
        hn[k] += dn * dn
        u[k] -= lr * du / math.sqrt(hu[k] + 1e-20)
        vc[k] -= lr * dc / math.sqrt(hc[k] + 1e-20)
        vn[k] -= lr * dn / math.sqrt(hn[k] + 1e-20)


@njit(nogil=True, cache=True, parallel=True)
def train_pass(order, rows, cols, coef, U, V, HU, HV, lr, reg, logistic, seeds, neg_lo=0, neg_hi=None):
    """Update for each nonzero ``order[k]`` with one context drawn uniformly from the others in
    ``[neg_lo, neg_hi)`` (all contexts when ``neg_hi`` is None; the observed context must lie in the range).

    Plain SGD (:func:`sgd_step`, step ``lr * coef[e] * l'``) when ``HU`` is None, else AdaGrad
    (:func:`adagrad_step`; ``HU``, ``HV``: the squared-gradient sums). numba compiles one version
    for each, the ``None`` test resolved at compile time, so neither pays for the other.
    The slice is cut into ``len(seeds)`` contiguous parts run in parallel (Hogwild), part ``p``
    drawing from its own generator seeded ``seeds[p]``: with one part the result is exact and
    repeatable. Under the block schedule (:mod:`gatelab.embeddings.wordrank`, several processes) the
    range is the process's current context block, so that negatives stay inside the rows it owns.
    """
    n_parts = len(seeds)
    size = len(order)
    hi_ctx = V.shape[0] if neg_hi is None else neg_hi
    span = np.uint64(hi_ctx - neg_lo - 1)
    for p in prange(n_parts):
        lo = size * p // n_parts
        hi = size * (p + 1) // n_parts
        r = np.uint64(seeds[p])
        for k in range(lo, hi):
            e = order[k]
            c = cols[e]
            w = rows[e]
            r = _lcg(r)
            n = neg_lo + np.int64((r >> _SHIFT) % span)
            if n >= c:
                n += 1
            if HU is None:
                sgd_step(U[w], V[c], V[n], lr * coef[e], logistic)
            else:
                adagrad_step(U[w], V[c], V[n], HU[w], HV[c], HV[n], coef[e], lr, reg, logistic)


@njit(nogil=True, cache=True, parallel=True)
def rank_sums(scores, row0, indptr, cols, logistic, out):
    """For rows ``row0 .. row0 + len(scores) - 1``: ``out[e] = sum_c' l(scores[w, c'] - scores[w, c_e])``.

    ``indptr``/``cols`` are the matrix in CSR order. With the hinge, a row's k observed scores
    are sorted once and each context adds ``1 + s_c'`` (and one to a count) to the observed
    contexts it outranks by more than -1 (``s_c < s_c' + 1``), found by bisection: O(n log k) a
    row instead of O(n k). The logistic loss sums over all contexts for each nonzero.
    """
    n_ctx = scores.shape[1]
    for i in prange(scores.shape[0]):
        s = scores[i]
        lo, hi = indptr[row0 + i], indptr[row0 + i + 1]
        k = hi - lo
        if k == 0:
            continue
        if logistic:
            for e in range(lo, hi):
                sc = np.float64(s[cols[e]])
                total = 0.0
                for c in range(n_ctx):
                    total += math.log2(1.0 + 2.0 ** (np.float64(s[c]) - sc))
                out[e] = total
            continue
        own = np.empty(k, dtype=np.float64)
        for j in range(k):
            own[j] = s[cols[lo + j]]
        order = np.argsort(own)
        th = own[order]
        cnt = np.zeros(k + 1, dtype=np.float64)
        sm = np.zeros(k + 1, dtype=np.float64)
        for c in range(n_ctx):
            x = np.float64(s[c])
            j = np.searchsorted(th, x + 1.0)  # observed contexts 0 .. j-1 (sorted) lie below x + 1
            cnt[j] += 1.0
            sm[j] += x
        count = 0.0
        total = 0.0
        for j in range(k - 1, -1, -1):
            count += cnt[j + 1]
            total += sm[j + 1]
            out[lo + order[j]] = count + total - count * th[j]
