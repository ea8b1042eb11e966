"""Compiled tokenising and counting of UTF-8 text files (numba): the fast path of :mod:`vocab`.

:func:`scan` reads a block of bytes, splits it into lines and whitespace-separated tokens the
way ``str.split()`` on a text-mode line does (every Unicode whitespace character separates;
``\\n`` and ``\\r`` end a line), looks each token up in an open-addressing hash table (FNV-1a, mixed),
inserts it on first sight, counts it, and writes its provisional id (order of first appearance)
to ``out``, with ``-1`` after each sentence piece. Blank lines are skipped, lines longer than
``max_sentence`` tokens are cut into pieces, and chunk boundaries are set every ``chunk_words``
words, all exactly as the Python path of :class:`gatelab.embeddings.vocab.EncodedCorpus`. A shard
``part`` of ``parts`` keeps only the chunks ``part``, ``part + parts``, ... of the whole corpus
(the others are tokenised, to find the chunk boundaries, but not looked up).

Distinct words are kept as their bytes in ``pool``, each followed by ``\\n`` (which no token
holds), so that the vocabulary decodes in one call. State that crosses blocks lives in ``st``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# indices into the state array ``st``
LINE, PIECE, SINCE_CUT, TOKENS, WORDS, PIECES, HAS_TOKEN, DISTINCT, POOL, ALL_TOKENS, CHUNK = range(11)
STATE_SIZE = 11
_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


@njit(nogil=True, cache=True, inline="always")
def _space(buf, i, n):
    """Byte length of the whitespace character at ``buf[i]`` (0: none), as ``str.isspace`` says."""
    b = buf[i]
    if b > 32:
        if b < 0xC2 or b > 0xE3:  # the common case: a printable ASCII byte or a continuation byte
            return 0
    elif b == 32 or (9 <= b <= 13) or b >= 28:
        return 1
    else:
        return 0
    if b == 0xC2 and i + 1 < n and (buf[i + 1] == 0x85 or buf[i + 1] == 0xA0):
        return 2
    if i + 2 < n:
        b1, b2 = buf[i + 1], buf[i + 2]
        if b == 0xE1 and b1 == 0x9A and b2 == 0x80:
            return 3
        if b == 0xE2 and b1 == 0x80 and (b2 <= 0x8A and b2 >= 0x80 or b2 == 0xA8 or b2 == 0xA9 or b2 == 0xAF):
            return 3
        if b == 0xE2 and b1 == 0x81 and b2 == 0x9F:
            return 3
        if b == 0xE3 and b1 == 0x80 and b2 == 0x80:
            return 3
    return 0


@njit(nogil=True, cache=True, inline="always")
def _mix(h):
    """MurmurHash3's finaliser: FNV-1a's low bits (the slot index) depend on the bytes' low bits only."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@njit(nogil=True, cache=True, inline="always")
def _lookup(buf, s, e, h, slots, pool):
    """The slot of the token ``buf[s:e]`` with hash ``h``: its word's, or the empty one where it goes.

    A slot holds (hash, word id or -1, start of the word in ``pool``, count) in 32 bytes, so a
    look-up and a count touch one cache line of the table and one of the pool.
    """
    mask = np.uint64(slots.shape[0] - 1)
    j = h & mask
    n = e - s
    key = np.int64(h)
    while True:
        if slots[j, 1] < 0:
            return j
        if slots[j, 0] == key:
            p = slots[j, 2]
            if pool[p + n] == 10:  # same length (the word ends where the token does)
                same = True
                for k in range(n):
                    if pool[p + k] != buf[s + k]:
                        same = False
                        break
                if same:
                    return j
        j = (j + np.uint64(1)) & mask


@njit(nogil=True, cache=True)
def rehash(old, slots):
    """Move the words of the table ``old`` into ``slots`` (all -1, a power of two)."""
    mask = np.uint64(slots.shape[0] - 1)
    for i in range(old.shape[0]):
        if old[i, 1] >= 0:
            j = np.uint64(old[i, 0]) & mask
            while slots[j, 1] >= 0:
                j = (j + np.uint64(1)) & mask
            for c in range(4):
                slots[j, c] = old[i, c]


@njit(nogil=True, cache=True, inline="always")
def _end_piece(st, out, n_out, bounds, ends, seen, n_bounds, chunk_words, part, parts):
    """Close the current sentence piece (and the chunk, once it holds ``chunk_words`` words)."""
    owned = st[CHUNK] % parts == part
    if owned:
        out[n_out] = -1
        n_out += 1
        st[TOKENS] += 1
        st[PIECES] += 1
    st[ALL_TOKENS] += 1
    st[SINCE_CUT] += st[PIECE]
    st[PIECE] = 0
    if st[SINCE_CUT] >= chunk_words:
        if owned:
            bounds[n_bounds] = st[TOKENS]
            ends[n_bounds] = st[ALL_TOKENS]
            seen[n_bounds] = st[DISTINCT]
            n_bounds += 1
        st[SINCE_CUT] = 0
        st[CHUNK] += 1
    return n_out, n_bounds


@njit(nogil=True, cache=True)
def scan(buf, i, n, slots, pool, st, out, bounds, ends, seen, max_sentence, chunk_words, part, parts):
    """Tokenise ``buf[i:n]`` (which ends at a token boundary).

    Returns ``(position, tokens written, bounds written)``. ``bounds`` gets the end of each chunk
    of the shard in the shard's tokens, ``ends`` the same end in the whole corpus's tokens, ``seen``
    the distinct words met so far (so the words of provisional ids up to it first occur by that end).
    ``out`` and ``bounds`` must hold ``n - i + 2`` and ``(n - i) // 2 + 2`` values. The scan stops early,
    at the start of a new word, when the table is half full or ``pool`` has no room for it: the
    caller grows them and calls again from the position returned.
    """
    n_out = 0
    n_bounds = 0
    room = slots.shape[0] // 2
    while i < n:
        b = buf[i]
        if b == 10 or b == 13:  # end of line
            if st[PIECE] > 0:
                n_out, n_bounds = _end_piece(st, out, n_out, bounds, ends, seen, n_bounds, chunk_words, part, parts)
            if st[HAS_TOKEN]:
                st[LINE] += 1
                st[HAS_TOKEN] = 0
            i += 1
            continue
        sp = _space(buf, i, n)
        if sp:
            i += sp
            continue
        s = i
        h = _FNV_OFFSET
        while i < n:
            b = buf[i]
            if b == 10 or b == 13 or _space(buf, i, n):
                break
            h = (h ^ np.uint64(b)) * _FNV_PRIME
            i += 1
        st[HAS_TOKEN] = 1
        if st[PIECE] == max_sentence:  # cut a long line
            n_out, n_bounds = _end_piece(st, out, n_out, bounds, ends, seen, n_bounds, chunk_words, part, parts)
        if st[CHUNK] % parts == part:
            h = _mix(h)
            j = _lookup(buf, s, i, h, slots, pool)
            w = slots[j, 1]
            if w < 0:
                w = st[DISTINCT]
                if w >= room or st[POOL] + i - s + 1 > pool.shape[0]:
                    return s, n_out, n_bounds
                st[DISTINCT] += 1
                p = st[POOL]
                slots[j, 0] = np.int64(h)
                slots[j, 1] = w
                slots[j, 2] = p
                slots[j, 3] = 0
                for k in range(i - s):
                    pool[p + k] = buf[s + k]
                pool[p + i - s] = 10
                st[POOL] = p + i - s + 1
            slots[j, 3] += 1
            out[n_out] = w
            n_out += 1
            st[TOKENS] += 1
            st[WORDS] += 1
        st[ALL_TOKENS] += 1
        st[PIECE] += 1
    return i, n_out, n_bounds
