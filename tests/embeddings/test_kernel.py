"""The compiled and the torch HogBatch updates against a plain numpy reference of one window."""

import numpy as np
import pytest
import torch

from gatelab.embeddings._kernel import EXP_TABLE_SIZE, MAX_EXP, SIGMOID_TABLE, batch_update, draw_negatives, train_chunk
from gatelab.embeddings.torch_backend import TorchTrainer
from gatelab.embeddings.vocab import Vocab

M64 = (1 << 64) - 1


def exact_sigmoid(s):
    return 1 / (1 + np.exp(-s))


def table_sigmoid(s):
    """word2vec.c's table look-up, which the compiled kernel uses."""
    return float(SIGMOID_TABLE[int((np.float32(s) + MAX_EXP) * (EXP_TABLE_SIZE / MAX_EXP / 2))])


def reference_update(w_in, w_out, ctx, outs, mult, alpha, sigmoid=exact_sigmoid):
    """The math of one window, written the plain way: every pair (context, output) on its own."""
    w_in, w_out = w_in.astype(np.float64), w_out.astype(np.float64)
    d_in, d_out = np.zeros_like(w_in), np.zeros_like(w_out)
    for c in ctx:
        for k, o in enumerate(outs):
            s = w_in[c] @ w_out[o]
            label = 1.0 if k == 0 else 0.0
            sig = 1.0 if s > 6 else 0.0 if s < -6 else sigmoid(s)
            g = alpha * mult[k] * (label - sig)
            d_out[o] += g * w_in[c]
            d_in[c] += g * w_out[o]
    return w_in + d_in, w_out + d_out


def random_model(v=30, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.5, (v, d)).astype(np.float32), rng.normal(0, 0.5, (v, d)).astype(np.float32)


def test_batch_update_equals_reference():
    w_in, w_out = random_model()
    ctx = np.array([3, 7, 7, 12, 0], dtype=np.int32)  # a repeated context word
    outs = np.array([5, 9, 3, 21], dtype=np.int32)  # centre word first, then noise
    mult = np.array([1, 2, 1, 1], dtype=np.float32)  # noise word 9 drawn twice
    alpha = 0.3
    exp_in, exp_out = reference_update(w_in, w_out, ctx, outs, mult, alpha, sigmoid=table_sigmoid)
    a, b = w_in.copy(), w_out.copy()
    x = np.empty((8, 16), np.float32)
    y = np.empty((8, 16), np.float32)
    g = np.empty((8, 8), np.float32)
    batch_update(a, b, ctx, len(ctx), outs, mult, len(outs), alpha, x, y, g)
    np.testing.assert_allclose(a, exp_in, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b, exp_out, rtol=1e-5, atol=1e-5)
    assert not np.allclose(a, w_in)  # the update did something
    # and the table is close to the exact sigmoid
    exact_in, exact_out = reference_update(w_in, w_out, ctx, outs, mult, alpha)
    np.testing.assert_allclose(a, exact_in, atol=5e-3)
    grid = np.linspace(-5.99, 5.99, 2001)
    assert max(abs(table_sigmoid(v) - exact_sigmoid(v)) for v in grid) < 3e-3


def test_saturated_scores_follow_word2vec():
    w_in = np.zeros((2, 4), np.float32)
    w_out = np.zeros((2, 4), np.float32)
    w_in[0] = 3.0
    w_out[1] = 3.0  # score 36 > 6: positive pair saturated, no update
    ctx = np.array([0], np.int32)
    outs = np.array([1], np.int32)
    mult = np.ones(1, np.float32)
    x = np.empty((1, 4), np.float32)
    y = np.empty((1, 4), np.float32)
    g = np.empty((1, 1), np.float32)
    batch_update(w_in, w_out, ctx, 1, outs, mult, 1, 0.5, x, y, g)
    assert np.all(w_in[0] == 3.0) and np.all(w_out[1] == 3.0)


def draw_like_before(target, table, negative, seed):
    """The former kernel's draw, in Python: a linear scan of the rows so far for each noise word."""
    r, outs, mult = seed, [target], [1.0]
    for _ in range(negative):
        r = (r * 25214903917 + 11) & M64
        w = int(table[(r >> 16) % len(table)])
        i = outs.index(w) if w in outs else -1
        if i < 0:
            outs.append(w)
            mult.append(1.0)
        elif i > 0:
            mult[i] += 1.0
    return np.array(outs, np.int32), np.array(mult, np.float32), r


@pytest.mark.parametrize("negative", [12, 5000])
def test_draw_negatives_merges_duplicates_and_drops_the_target(negative):
    table = np.array([4, 4, 4, 2, 2, 7, 9, 4], dtype=np.int32)
    target, seed = 4, 12345
    rows = min(negative, 10) + 1
    outs, mult = np.empty(rows, np.int32), np.empty(rows, np.float32)
    row_of = np.full(10, -1, np.int32)
    n_out, r = draw_negatives(target, table, negative, np.uint64(seed), outs, mult, row_of)
    want_outs, want_mult, want_r = draw_like_before(target, table, negative, seed)
    assert int(r) == want_r and n_out == len(want_outs) == 4
    assert outs[:n_out].tolist() == want_outs.tolist() and mult[:n_out].tolist() == want_mult.tolist()
    assert np.all(row_of == -1)  # the look-up is clean for the next draw


def test_new_draw_gives_the_former_update_on_a_fixed_batch():
    """One batch drawn and applied by the kernel equals the former linear-scan draw's update to 1e-5."""
    w_in, w_out = random_model(v=30, seed=3)
    table = Vocab([str(i) for i in range(30)], np.arange(30, 0, -1)).noise_table(size=1000)
    ctx = np.array([3, 7, 12, 0, 21, 8], np.int32)
    negative, target, seed, alpha = 300, 5, 777, 0.05
    outs, mult = np.empty(31, np.int32), np.empty(31, np.float32)
    n_out, _ = draw_negatives(target, table, negative, np.uint64(seed), outs, mult, np.full(30, -1, np.int32))
    a, b = w_in.copy(), w_out.copy()
    x, y, g = np.empty((6, 16), np.float32), np.empty((31, 16), np.float32), np.empty((31, 6), np.float32)
    batch_update(a, b, ctx, len(ctx), outs, mult, n_out, alpha, x, y, g)
    old_outs, old_mult, _ = draw_like_before(target, table, negative, seed)
    exp_in, exp_out = reference_update(w_in, w_out, ctx, old_outs, old_mult, alpha, sigmoid=table_sigmoid)
    np.testing.assert_allclose(a, exp_in, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b, exp_out, rtol=1e-5, atol=1e-5)
    assert old_mult.sum() > len(old_outs) + 100  # many repeats, merged


def test_torch_step_equals_reference():
    w_in, w_out = random_model(seed=1)
    ctx = np.array([[3, 7, 12, 0]], dtype=np.int64)
    noise = np.array([[9, 9, 5, 21]], dtype=np.int64)  # 5 is the centre word: masked out
    centre = np.array([5])
    mult = np.array([1, 2, 1], np.float32)
    exp_in, exp_out = reference_update(w_in, w_out, ctx[0], np.array([5, 9, 21]), mult, 0.2)
    a, b = w_in.copy(), w_out.copy()
    tr = TorchTrainer(a, b, np.ones(30, np.float32), np.arange(30, dtype=np.int32), window=2, negative=4, batch_size=4)
    with torch.no_grad():
        tr.step(centre, ctx, np.ones((1, 4), bool), noise, noise != centre[:, None], np.array([0.2], np.float32))
    np.testing.assert_allclose(a, exp_in, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b, exp_out, rtol=1e-5, atol=1e-5)


def test_train_chunk_counts_and_is_deterministic():
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 30, 500).astype(np.int32)
    stream[::50] = -1  # sentence ends
    stream[7::50] = -2  # words dropped by min_count
    raw_expected = int((stream != -1).sum())
    kept_expected = int((stream >= 0).sum())
    keep = np.ones(30, np.float32)
    table = np.arange(30, dtype=np.int32)
    results = []
    for _ in range(2):
        w_in, w_out = random_model(seed=2)
        raw, eff = train_chunk(stream, w_in, w_out, keep, table, 3, 4, 6, 0.05, 0.01, 99, 1000)
        results.append((w_in, w_out))
        assert raw == raw_expected and eff == kept_expected
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    keep_half = np.full(30, 0.5, np.float32)
    raw, eff = train_chunk(stream, *random_model(seed=2), keep_half, table, 3, 4, 6, 0.05, 0.01, 99, 1000)
    assert raw == raw_expected and 0.35 * kept_expected < eff < 0.65 * kept_expected
