import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from gatelab.checkpoint import Interrupted, load_state
from gatelab.cli import main
from gatelab.embeddings import _wordrank_kernel, wordrank
from gatelab.embeddings.cooccurrence import CooccurrenceMatrix, count_cooccurrences
from gatelab.embeddings.keyedvectors import KeyedVectors
from gatelab.embeddings.vocab import Vocab
from gatelab.embeddings.wordrank import WordRank
from gatelab.errors import GatelabError

from .conftest import planted_sentences

RHO_LOSS = [(rho, loss) for rho in wordrank.RHOS for loss in wordrank.LOSSES]


def small_problem(seed=0, n=7, d=4):
    rng = np.random.default_rng(seed)
    U, V = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    rows = np.array([0, 0, 1, 3, 5, 6], dtype=np.int32)
    cols = np.array([1, 4, 2, 3, 0, 6], dtype=np.int32)
    weights = rng.uniform(0.1, 1.0, size=len(rows))
    return U, V, rows, cols, weights


@pytest.mark.parametrize("rho,loss", RHO_LOSS)
def test_gradient_of_the_linearised_objective_matches_a_numeric_derivative(rho, loss):
    U, V, rows, cols, weights = small_problem()
    xi = np.random.default_rng(1).uniform(0.05, 0.9, size=len(rows))  # inside rho2's domain (0, 1)

    def f(U, V):
        return wordrank.linearised_objective(U, V, rows, cols, weights, xi, rho, loss)

    dU, dV = wordrank.linearised_gradient(U, V, rows, cols, weights, xi, rho, loss)
    h = 1e-6
    for M, G, which in ((U, dU, 0), (V, dV, 1)):
        numeric = np.zeros_like(M)
        for idx in np.ndindex(M.shape):
            plus, minus = M.copy(), M.copy()
            plus[idx] += h
            minus[idx] -= h
            args_p = (plus, V) if which == 0 else (U, plus)
            args_m = (minus, V) if which == 0 else (U, minus)
            numeric[idx] = (f(*args_p) - f(*args_m)) / (2 * h)
        np.testing.assert_allclose(G, numeric, rtol=1e-5, atol=1e-6)
    assert np.abs(dU).sum() > 0 and np.abs(dV).sum() > 0


@pytest.mark.parametrize("rho", wordrank.RHOS)
def test_true_objective_gradient_is_the_bound_gradient_at_the_closed_form_xi(rho):
    """Envelope: with xi at the tangent point, d rho(S) = g(xi) dS (rho2's tangent point is 1 / (S + 1))."""
    U, V, rows, cols, weights = small_problem(seed=2)
    loss = "logistic"

    def true(U):
        S = wordrank.rank_surrogates(U, V, rows, cols, loss)
        return float(np.sum(weights * wordrank.rho_value(S, rho)))

    S = wordrank.rank_surrogates(U, V, rows, cols, loss)
    xi = wordrank.xi_update(S, rho) if rho != "rho2" else 1.0 / (S + 1.0)
    dU, _ = wordrank.linearised_gradient(U, V, rows, cols, weights, xi, rho, loss)
    h = 1e-6
    numeric = np.zeros_like(U)
    for idx in np.ndindex(U.shape):
        plus, minus = U.copy(), U.copy()
        plus[idx] += h
        minus[idx] -= h
        numeric[idx] = (true(plus) - true(minus)) / (2 * h)
    np.testing.assert_allclose(dU, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("rho", ["rho1", "rho3"])
def test_xi_closed_form_is_the_minimiser_of_the_bound(rho):
    for S in (1.0, 3.7, 50.0, 4000.0):
        best = minimize_scalar(
            lambda x, S=S: wordrank.bound(S, x, rho), bounds=(1e-6, 10.0), method="bounded", options={"xatol": 1e-10}
        )
        closed = wordrank.xi_update(S, rho)
        assert closed == pytest.approx(best.x, rel=1e-4)
        # the bound touches rho there, and lies above it elsewhere
        assert wordrank.bound(S, closed, rho) == pytest.approx(wordrank.rho_value(S, rho), rel=1e-9)
        assert wordrank.bound(S, 0.5 * closed, rho) > wordrank.rho_value(S, rho)


def test_rho2_bound_and_the_authors_xi_rule():
    for S in (1.5, 20.0, 900.0):
        # without the prior (beta = 0) the bound is rho2's tangent: minimised at 1 / (S + 1), where it equals rho2
        best = minimize_scalar(
            lambda x, S=S: wordrank.bound(S, x, "rho2", beta=0.0),
            bounds=(1e-9, 1 - 1e-9),
            method="bounded",
            options={"xatol": 1e-12},
        )
        assert best.x == pytest.approx(1.0 / (S + 1.0), rel=1e-4)
        assert best.fun == pytest.approx(wordrank.rho_value(S, "rho2"), rel=1e-7)
    S = np.array([1.0, 10.0, 100.0, 1e4])
    xi = wordrank.xi_update(S, "rho2")  # (beta/2 + 1) / (sqrt(S) + 1 + beta): in (0, 1), falling with S
    assert np.all((xi > 0) & (xi < 1)) and np.all(np.diff(xi) < 0)
    assert xi[1] == pytest.approx(50.5 / (np.sqrt(10.0) + 100.0))


@pytest.mark.parametrize("loss", wordrank.LOSSES)
def test_kernel_step_descends_the_rank_surrogate(loss):
    """Summed over every other context, the kernel's steps are -weight * dS (S: the rank surrogate)."""
    rng = np.random.default_rng(3)
    n, d = 9, 5
    U, V = rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)
    w, c, weight, xi = 2, 4, 0.7, 0.3
    mult = 1e-3
    total_u, total_v = np.zeros(d), np.zeros((n, d))
    for neg in range(n):
        if neg == c:
            continue
        U2, V2 = U.copy(), V.copy()
        _wordrank_kernel.sgd_step(U2[w], V2[c], V2[neg], np.float32(mult), loss == "logistic")
        total_u += U2[w] - U[w]
        total_v += V2 - V
    rows, cols = np.array([w], dtype=np.int32), np.array([c], dtype=np.int32)
    coef = weight * wordrank.bound_slope(np.array([xi]), "rho1")
    dU, dV = wordrank.linearised_gradient(
        U.astype(np.float64), V.astype(np.float64), rows, cols, np.array([weight]), np.array([xi]), "rho1", loss
    )
    np.testing.assert_allclose(total_u, -mult * dU[w] / coef, rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(total_v, -mult * dV / coef, rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("loss", wordrank.LOSSES)
def test_train_pass_takes_the_sgd_and_the_adagrad_step_of_its_drawn_context(loss):
    """One nonzero, two contexts (so the drawn one is known): plain SGD (HU None) and AdaGrad against
    the formulas, the AdaGrad step from the gradient of ``weight * l(x)`` plus ``reg`` times the rows."""
    rng = np.random.default_rng(5)
    U, V = rng.normal(size=(1, 4)).astype(np.float32), rng.normal(size=(2, 4)).astype(np.float32) * 0.1
    rows, cols, order = np.array([0], np.int32), np.array([1], np.int32), np.array([0], np.int64)
    weight, lr, reg = 0.6, 0.05, 0.01
    u, vc, vn = U[0].astype(np.float64), V[1].astype(np.float64), V[0].astype(np.float64)
    g = weight * wordrank.loss_derivative(u @ (vn - vc), loss)
    grads = (g * (vn - vc), -g * u, g * u)
    seeds = np.array([9], dtype=np.uint64)
    U1, V1 = U.copy(), V.copy()
    coef = np.array([weight], np.float32)
    _wordrank_kernel.train_pass(
        order, rows, cols, coef, U1, V1, None, None, np.float32(lr), np.float32(0), loss == "logistic", seeds
    )
    for got, start, grad in zip((U1[0], V1[1], V1[0]), (u, vc, vn), grads):
        np.testing.assert_allclose(got, start - lr * grad, rtol=1e-5, atol=1e-7)
    U2, V2 = U.copy(), V.copy()
    HU, HV = np.zeros_like(U), np.zeros_like(V)
    _wordrank_kernel.train_pass(
        order, rows, cols, coef, U2, V2, HU, HV, np.float32(lr), np.float32(reg), loss == "logistic", seeds
    )
    for got, start, grad in zip((U2[0], V2[1], V2[0]), (u, vc, vn), grads):
        full = grad + reg * start
        np.testing.assert_allclose(got, start - lr * full / np.sqrt(full**2), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(HU[0], (grads[0] + reg * u) ** 2, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("loss", wordrank.LOSSES)
def test_compiled_rank_sums_match_the_dense_reference(loss):
    rng = np.random.default_rng(4)
    n = 60
    mask = rng.random((n, n)) < 0.4
    rows, cols = (a.astype(np.int32) for a in np.nonzero(mask))
    m = CooccurrenceMatrix(
        Vocab([f"w{i}" for i in range(n)], np.arange(n, 0, -1)),
        rows,
        cols,
        rng.uniform(0.1, 5, size=len(rows)),
        15,
        1,
        100,
    )
    U, V = rng.normal(size=(n, 6)).astype(np.float32), rng.normal(size=(n, 6)).astype(np.float32)
    model = WordRank(loss=loss)
    model.matrix_ = m
    got = model.rank_sums(U, V, block=7)
    want = wordrank.rank_surrogates(U.astype(np.float64), V.astype(np.float64), rows, cols, loss)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.fixture(scope="module")
def planted_matrix():
    sentences, _ = planted_sentences(n_sentences=600)
    return count_cooccurrences(sentences, window=5, min_count=1)


def fit_params(**kw):
    return {**dict(vector_size=8, epochs=3, period=1, job_pairs=100, workers=1, seed=3), **kw}


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_resume_after_a_stop_mid_epoch_equals_an_uninterrupted_run(planted_matrix, tmp_path, monkeypatch, optimizer):
    whole = WordRank(**fit_params(optimizer=optimizer)).fit(planted_matrix)
    name = "train_pass"
    real = getattr(_wordrank_kernel, name)
    calls = []

    def stopping(*args):
        calls.append(1)
        if len(calls) == 10:  # inside the second epoch (7 jobs an epoch): the Checkpointer saves at its next step
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(_wordrank_kernel, name, stopping)
    ckpt = tmp_path / "ck.pt"
    with pytest.raises(Interrupted):
        WordRank(**fit_params(optimizer=optimizer)).fit(planted_matrix, checkpoint=ckpt)
    saved = load_state(ckpt)
    assert saved["position"]["epoch"] == 1 and saved["position"]["step"] > 0
    # AdaGrad's sums of squared gradients are part of the state; plain SGD has none to keep
    assert ("HU" in saved and "HV" in saved) == (optimizer == "adagrad")
    monkeypatch.setattr(_wordrank_kernel, name, real)
    resumed = WordRank(**fit_params(optimizer=optimizer)).fit(planted_matrix, checkpoint=ckpt, resume=ckpt)
    assert np.array_equal(resumed.word_vectors_.vectors, whole.word_vectors_.vectors)
    assert np.array_equal(resumed.context_vectors_.vectors, whole.context_vectors_.vectors)
    assert np.array_equal(resumed.xi_, whole.xi_)
    assert resumed.train_stats_["resumed_from_updates"] == saved["position"]["updates"] > 0


@pytest.mark.parametrize("rho", wordrank.RHOS)
def test_sgd_takes_the_authors_step_then_xi_updates_reweight_without_shrinking_it(planted_matrix, monkeypatch, rho):
    """Before the first xi update each pair's step is the authors' ``lr * r * g(xi0) * nnz / sum(r)``;
    an update changes the pairs' relative steps, but their r-weighted mean stays where it started."""
    real = _wordrank_kernel.train_pass
    seen = []

    def spy(order, rows, cols, coef, *rest):
        seen.append((float(rest[4]) * coef.astype(np.float64), coef.copy()))
        return real(order, rows, cols, coef, *rest)

    monkeypatch.setattr(_wordrank_kernel, "train_pass", spy)
    lr = 0.002
    model = WordRank(**fit_params(rho=rho, lr=lr, epochs=2, job_pairs=10**6)).fit(planted_matrix)
    (first, coef1), (second, coef2) = seen
    r = wordrank.pair_weights(planted_matrix.values, model.train_stats_["x_max"])
    g0 = wordrank.bound_slope(wordrank.initial_xi(rho), rho)
    np.testing.assert_allclose(first, lr * r * g0 * len(r) / r.sum(), rtol=1e-5)
    assert first.sum() == pytest.approx(second.sum(), rel=1e-5)
    relative = (coef2 / coef1) / (coef2 / coef1).mean()
    assert relative.std() > 0.01  # the update did reweight the pairs


def test_resume_refuses_another_config_or_matrix(planted_matrix, tmp_path):
    ckpt = tmp_path / "ck.pt"
    WordRank(**fit_params(epochs=1)).fit(planted_matrix, checkpoint=ckpt)
    with pytest.raises(GatelabError, match="different configuration"):
        WordRank(**fit_params(rho="rho3")).fit(planted_matrix, resume=ckpt)
    other = count_cooccurrences(planted_sentences(n_sentences=300, seed=9)[0], window=5, min_count=1)
    with pytest.raises(GatelabError, match="another co-occurrence matrix"):
        WordRank(**fit_params()).fit(other, resume=ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(GatelabError, match="not a readable"):
        WordRank(**fit_params()).fit(planted_matrix, resume=ckpt)


def test_outputs_are_word2vec_files_with_word_context_and_sum(planted_matrix, tmp_path):
    out = tmp_path / "v.bin"
    model = wordrank.train_wordrank(
        planted_matrix, out=out, sum_out=tmp_path / "s.txt", context_out=tmp_path / "c.bin", **fit_params(epochs=1)
    )
    np.testing.assert_allclose(KeyedVectors.load_word2vec_format(out).vectors, model.word_vectors_.vectors)
    np.testing.assert_allclose(
        KeyedVectors.load_word2vec_format(tmp_path / "c.bin").vectors, model.context_vectors_.vectors
    )
    total = KeyedVectors.load_word2vec_format(tmp_path / "s.txt")
    assert total.index_to_key == model.vocab.words
    np.testing.assert_allclose(
        total.vectors, model.word_vectors_.vectors + model.context_vectors_.vectors, rtol=1e-5, atol=1e-6
    )
    assert (tmp_path / "v.bin.json").is_file() and not wordrank.work_dir(out).exists()


def test_short_training_on_brown_learns_word_similarity(data):
    """30 epochs on 300k tokens of Brown + PTB: the word vectors (``wv``, what the authors evaluate)
    rank WS-353 well above random vectors. U + V, evaluated by default before, scored about 0 here."""
    from gatelab.data.text import open_corpus
    from gatelab.embeddings.cooccurrence import first_tokens
    from gatelab.embeddings.evaluate import evaluate_all

    matrix = count_cooccurrences(list(first_tokens(open_corpus("brown+ptb"), 300_000)))
    model = WordRank(epochs=30, workers=1, seed=1).fit(matrix)
    ws = {r["name"]: r["score"] for r in evaluate_all(model.wv)}["WS-353"]
    rand = KeyedVectors(model.vocab.words, np.random.default_rng(0).normal(size=(len(model.vocab), 100)))
    ws_rand = {r["name"]: r["score"] for r in evaluate_all(rand)}["WS-353"]
    assert ws > 0.12 and ws > ws_rand + 0.1, (ws, ws_rand)


def test_bad_parameters_are_refused():
    with pytest.raises(GatelabError, match="unknown rho 'rho4'"):
        WordRank(rho="rho4")
    with pytest.raises(GatelabError, match="unknown loss"):
        WordRank(loss="squared")
    with pytest.raises(GatelabError, match="vector_size"):
        WordRank(vector_size=0)
    with pytest.raises(GatelabError, match="unknown WordRank parameter"):
        WordRank(dim=10)
    with pytest.raises(GatelabError, match="cpu"):
        WordRank(device="cuda")
    for bad in ("large", 0, float("nan")):
        with pytest.raises(GatelabError, match="x_max must be a finite number > 0 or 'auto'"):
            WordRank(x_max=bad)


def test_auto_x_max_scales_the_authors_text8_setting_to_the_corpus(planted_matrix):
    """x_max="auto" weighs the pairs as x_max = 100 * tokens / text8's tokens would (100 at text8's size)."""
    assert wordrank.corpus_x_max(wordrank.TEXT8_TOKENS) == 100.0 == wordrank.corpus_x_max(10**10)
    auto = WordRank(**fit_params(x_max="auto", epochs=1)).fit(planted_matrix)
    want = 100.0 * planted_matrix.n_words / wordrank.TEXT8_TOKENS
    assert auto.train_stats_["x_max"] == pytest.approx(want)
    fixed = WordRank(**fit_params(x_max=want, epochs=1)).fit(planted_matrix)
    assert np.array_equal(auto.word_vectors_.vectors, fixed.word_vectors_.vectors)
    authors = WordRank(**fit_params(x_max=100.0, epochs=1)).fit(planted_matrix)
    assert not np.array_equal(auto.word_vectors_.vectors, authors.word_vectors_.vectors)
    assert WordRank().config.x_max == "auto"


@pytest.mark.parametrize(
    "extra",
    [
        ["--rho", "rho9"],
        ["--loss", "l2"],
        ["--size", "0"],
        ["--t", "1"],
        ["--lr", "nan"],
        ["--min-count", "1000"],
        ["--x-max", "big"],
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c a b\nb c a\n" * 20)
    try:
        code = main(["wordrank", "train", str(corpus), "--out", str(tmp_path / "v.bin"), "--quiet", *extra])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
    assert not (tmp_path / "v.bin").exists()


def test_a_killed_run_resumes_from_its_intact_checkpoint(tmp_path):
    out = tmp_path / "v.bin"
    ckpt = wordrank.work_dir(out) / "checkpoint.pt"
    cmd = [sys.executable, "-m", "gatelab", "wordrank", "train", "zipf:100000:1000", "--out", str(out), "--quiet"]
    # enough epochs that a quiet machine cannot finish between the first checkpoint and the kill
    cmd += ["--epochs", "40", "--workers", "1", "--size", "16", "--checkpoint-every", "0.1"]
    env = {**os.environ, "PYTHONPATH": str(Path(wordrank.__file__).parents[2])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ckpt.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.1)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        proc.kill()
        proc.wait()
    saved = load_state(ckpt)  # the previous checkpoint is intact
    assert not out.exists()
    done = subprocess.run(cmd + ["--resume", str(ckpt)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed_at = int(re.search(r"resumed at update (\d+)", done.stdout).group(1))
    assert resumed_at >= saved["position"]["updates"] > 0
    assert KeyedVectors.load_word2vec_format(out).vector_size == 16 and not wordrank.work_dir(out).exists()
