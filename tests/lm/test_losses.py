"""The output-layer losses against direct reference computations."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from gatelab.lm.corpus import load_corpus
from gatelab.lm.output import (
    BlackOut,
    FullSoftmax,
    ImportanceSampling,
    blackout_loss,
    make_output,
    nce_loss,
    sampled_softmax_loss,
)
from gatelab.lm.sampler import UnigramSampler
from gatelab.lm.train import LMConfig, train

torch.set_default_dtype(torch.float32)


def _reference_blackout(s, q, target, samples):
    """Loop-by-loop BlackOut loss of one example: s are all V scores, samples a list of ids (may repeat)."""
    negs = [j for j in samples if j != target]
    w = lambda j: 1.0 / q[j]
    z = w(target) * math.exp(s[target]) + sum(w(j) * math.exp(s[j]) for j in negs)
    p = lambda j: w(j) * math.exp(s[j]) / z
    return -(math.log(p(target)) + sum(math.log(1.0 - p(j)) for j in negs))


def test_blackout_loss_and_gradient_match_closed_form():
    torch.manual_seed(0)
    V = 7
    q = torch.softmax(torch.randn(V, dtype=torch.float64), 0)
    s = torch.randn(V, dtype=torch.float64, requires_grad=True)
    target, samples = 2, [0, 3, 5, 6]
    loss = blackout_loss(s[target], s[samples], q[target].log(), q[samples].log())
    ref = _reference_blackout(s.tolist(), q.tolist(), target, samples)
    assert float(loss.detach()) == pytest.approx(ref, rel=1e-12)
    loss.backward()
    # Closed form (paper, eqs. 7-8), for the gradient of J = -loss w.r.t. the scores:
    #   dJ/ds_i = 1 - p_i + p_i * sum_j p_j / (1 - p_j)
    #   dJ/ds_j = -p_j - p_j / (1 - p_j) + p_j * sum_k p_k / (1 - p_k)
    with torch.no_grad():
        a = s - q.log()
        ids = [target] + samples
        p = torch.softmax(a[ids], 0)
        p_i, p_s = p[0], p[1:]
        r = (p_s / (1 - p_s)).sum()
        grad_j = torch.zeros(V, dtype=torch.float64)
        grad_j[target] = 1 - p_i + p_i * r
        grad_j[samples] = -p_s - p_s / (1 - p_s) + p_s * r
    assert torch.allclose(s.grad, -grad_j, atol=1e-12)
    # words neither target nor sampled get no gradient
    assert s.grad[[1, 4]].abs().max() == 0


def test_blackout_repeated_samples_and_accidental_hits_match_reference():
    torch.manual_seed(1)
    V = 6
    q = torch.softmax(torch.randn(V, dtype=torch.float64), 0)
    s = torch.randn(V, dtype=torch.float64)
    target, samples = 3, [3, 1, 1, 4, 3, 0]  # the target drawn twice, word 1 twice
    valid = torch.tensor(samples) != target
    loss = blackout_loss(s[target], s[samples], q[target].log(), q[samples].log(), valid)
    assert float(loss) == pytest.approx(_reference_blackout(s.tolist(), q.tolist(), target, samples), rel=1e-12)


def test_blackout_layer_gradient_equals_autograd_through_full_scores():
    """The layer (sparse row lookups, shared samples, masking) equals the functional loss on dense scores."""
    torch.manual_seed(2)
    V, H, T, B, K = 11, 5, 3, 4, 6
    counts = torch.randint(1, 50, (V,)).double()
    layer = BlackOut(V, H, counts, samples=K, alpha=0.4, seed=0).double()
    hidden = torch.randn(T, B, H, dtype=torch.float64)
    targets = torch.randint(0, V, (T, B))
    samples = torch.randint(0, V, (T, K))
    samples[0, 0] = targets[0, 0]  # an accidental hit
    loss, n = layer(hidden, targets, samples)
    loss.backward()
    assert n == T * B and layer.weight.grad.is_sparse
    w = layer.weight.detach().clone().requires_grad_(True)
    scores = hidden @ w.t()  # (T, B, V)
    lq = layer.log_q.double()  # the layer's own log q (float32 precision)
    ref = 0.0
    for t in range(T):
        for b in range(B):
            y, smp = targets[t, b], samples[t]
            ref = ref + blackout_loss(scores[t, b, y], scores[t, b, smp], lq[y], lq[smp], smp != y)
    ref.backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-10)
    assert torch.allclose(layer.weight.grad.to_dense(), w.grad, atol=1e-10)
    touched = set(targets.flatten().tolist()) | set(samples.flatten().tolist())
    rows = set(layer.weight.grad.coalesce().indices()[0].tolist())
    assert rows == touched  # only target and sample rows are read and written


def test_k_equal_vocab_with_uniform_weights_is_full_softmax():
    torch.manual_seed(3)
    V, H, T, B = 9, 4, 2, 3
    counts = torch.randint(1, 100, (V,)).double()
    hidden = torch.randn(T, B, H, dtype=torch.float64)
    targets = torch.randint(0, V, (T, B))
    full = FullSoftmax(V, H).double()
    every = torch.arange(V).expand(T, V)  # K = V: every word, the target masked out once
    for cls in (BlackOut, ImportanceSampling):
        layer = cls(V, H, counts, samples=V, alpha=0.0, seed=0).double()  # alpha = 0: uniform weights
        layer.weight.data.copy_(full.weight.data)
        s = hidden @ layer.weight.t()
        s_t = s.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        lq = layer.log_q.double()
        valid = every.unsqueeze(1) != targets.unsqueeze(-1)
        # the weighted softmax probability of the target is the full softmax probability
        logp_weighted = -sampled_softmax_loss(s_t, s, lq[targets], lq[every].unsqueeze(1), valid)
        assert torch.allclose(logp_weighted, torch.log_softmax(s, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1))
    is_layer = ImportanceSampling(V, H, counts, samples=V, alpha=0.0).double()
    is_layer.weight.data.copy_(full.weight.data)
    assert float(is_layer(hidden, targets, every)[0]) == pytest.approx(float(full(hidden, targets)[0]), rel=1e-12)


def test_nce_loss_matches_reference():
    torch.manual_seed(4)
    V, K = 8, 5
    q = torch.softmax(torch.randn(V, dtype=torch.float64), 0)
    s = torch.randn(V, dtype=torch.float64)
    target, samples = 1, [0, 1, 4, 4, 7]
    got = nce_loss(s[target], s[samples], q[target].log(), q[samples].log(), K, log_z=0.3)
    u = lambda j: math.exp(s[j] - 0.3)
    ref = -math.log(u(target) / (u(target) + K * q[target])) - sum(
        math.log(K * q[j] / (u(j) + K * q[j])) for j in samples
    )
    assert float(got) == pytest.approx(ref, rel=1e-12)


def test_sampler_frequencies_match_q():
    counts = 1.0 / torch.arange(1, 51, dtype=torch.float64)  # Zipf
    for alpha in (0.0, 0.4, 1.0):
        sampler = UnigramSampler(counts, alpha)
        q = counts.pow(alpha) / counts.pow(alpha).sum()
        assert torch.allclose(sampler.q, q)
        n = 200_000
        draws = sampler.sample((n,), torch.Generator().manual_seed(0))
        freq = torch.bincount(draws, minlength=50).double() / n
        sigma = (q * (1 - q) / n).sqrt()
        assert ((freq - q).abs() / sigma).max() < 5.0
        chi2 = float(((freq - q) ** 2 / q).sum() * n)
        assert chi2 < 49 + 5 * math.sqrt(2 * 49)


def test_exact_nll_is_chunked_full_softmax():
    torch.manual_seed(5)
    layer = make_output("nce", 37, 6, counts=torch.ones(37), samples=5)
    h = torch.randn(4, 3, 6)
    y = torch.randint(0, 37, (4, 3))
    y[0, 0] = -1
    ref = F.cross_entropy(h.reshape(-1, 6) @ layer.weight.t(), y.reshape(-1), ignore_index=-1, reduction="none")
    got = layer.nll(h, y, chunk_elems=37 * 2)
    assert torch.allclose(got.reshape(-1), ref, atol=1e-5)
    assert got[0, 0] == 0


def test_nce_learned_normaliser_is_trained_and_fixed_one_is_not(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("\n".join(["the cat sat on the mat", "a dog and a cat sat on the log"] * 20) + "\n")
    corpus = load_corpus(str(text), val_size=0.1, seed=0)
    cfg = LMConfig(loss="nce", samples=5, hidden=16, epochs=1, batch_size=4, bptt=8, lr=0.05, nce_log_z=2.0)
    fixed, _ = train(corpus, cfg)
    learned, _ = train(corpus, dataclasses.replace(cfg, nce_learn_z=True))
    assert fixed.output.log_z == 2.0 and "output.log_z" not in fixed.state_dict()
    assert isinstance(learned.output.log_z, torch.nn.Parameter)
    assert abs(float(learned.output.log_z) - 2.0) > 1e-3  # it moved from where it started
