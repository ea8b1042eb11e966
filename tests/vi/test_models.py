"""The VI updates against closed forms, monotone batch ELBOs, recovery of known components, ESVI against batch."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.special import digamma

from gatelab.errors import GatelabError
from gatelab.vi import LDAVI, GaussianMixtureVI, synthetic_gmm, synthetic_lda


def test_single_gaussian_posterior_is_the_conjugate_update():
    x = torch.randn(200, 3, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([3.0, -1.0, 0.0])
    model = GaussianMixtureVI(
        1, max_iter=1, dtype=torch.float64, mean_precision_prior=2.0, degrees_of_freedom_prior=3.0
    )
    model.fit(x)
    n, mean = len(x), x.mean(0)
    var = x.var(0, unbiased=False)
    m0, b0 = mean, 3.0 * var  # the prior centres on the data: m0 = mean, b0 = a0 · variance
    beta = 2.0 + n
    expect_m = (2.0 * m0 + n * mean) / beta
    expect_b = b0 + 0.5 * ((x - mean) ** 2).sum(0) + 2.0 * n * (mean - m0) ** 2 / (2 * beta)
    assert torch.allclose(model.means_[0], expect_m)
    assert model.mean_precision_[0] == pytest.approx(beta)
    assert model.degrees_of_freedom_[0] == pytest.approx(3.0 + n / 2)
    assert torch.allclose(model.scale_[0], expect_b)
    assert model.weights_[0] == pytest.approx(1.0)


def test_lda_gamma_is_the_fixed_point_on_two_documents():
    counts = np.array([[3, 0, 1, 2], [0, 4, 1, 0]], dtype=float)
    model = LDAVI(2, max_iter=5, dtype=torch.float64, local_iter=200, local_tol=0, seed=1).fit(counts)
    theta = model.transform(counts).numpy()
    alpha, lam = 0.5, model.components_.numpy()
    gamma = theta * (2 * alpha + counts.sum(1, keepdims=True))  # Σ_k γ_dk = K α + N_d
    elog_beta = digamma(lam) - digamma(lam.sum(1, keepdims=True))
    for d in range(2):
        elog_theta = digamma(gamma[d]) - digamma(gamma[d].sum())
        expect = np.full(2, alpha)
        for w in range(4):
            phi = np.exp(elog_theta + elog_beta[:, w])
            expect += counts[d, w] * phi / phi.sum()
        np.testing.assert_allclose(gamma[d], expect, rtol=1e-6)


@pytest.mark.parametrize("algorithm", ["batch", "bsp"])
def test_batch_elbo_never_decreases(algorithm):
    corpus, _ = synthetic_lda(n_docs=120, n_words=80, n_topics=4, doc_length=40, seed=2)
    lda = LDAVI(4, algorithm=algorithm, max_iter=12, local_iter=3, dtype=torch.float64).fit(corpus)
    elbo = [h["elbo"] for h in lda.history_]
    assert len(elbo) == 12 and all(b >= a - 1e-9 * abs(a) for a, b in zip(elbo, elbo[1:])), elbo
    assert elbo[-1] > elbo[0] + 1
    x, _, _ = synthetic_gmm(600, 4, 2, seed=3)
    gmm = GaussianMixtureVI(6, algorithm=algorithm, max_iter=15, dtype=torch.float64).fit(x)
    elbo = [h["elbo"] for h in gmm.history_]
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(elbo, elbo[1:])), elbo


@pytest.mark.parametrize("algorithm, update", [("batch", None), ("svi", None), ("esvi", None), ("esvi", "stochastic")])
def test_gaussian_components_are_recovered(algorithm, update):
    x, _, means = synthetic_gmm(3000, 5, 2, separation=12.0, seed=4)
    options = dict(max_iter=20, batch_size=300, n_blocks=None, seed=0, esvi_update=update or "incremental")
    model = GaussianMixtureVI(5, algorithm=algorithm, **options).fit(x)
    cost = torch.cdist(model.means_.float(), means).numpy()
    rows, cols = linear_sum_assignment(cost)
    assert cost[rows, cols].mean() < 0.1, cost[rows, cols]


def test_lda_topics_are_recovered_and_esvi_matches_batch():
    corpus, topics = synthetic_lda(n_docs=400, n_words=60, n_topics=3, doc_length=80, alpha=0.3, seed=5)
    batch = LDAVI(3, max_iter=30, local_iter=5, seed=1).fit(corpus)
    l1 = torch.cdist(batch.topic_word_, topics, p=1).numpy()
    rows, cols = linear_sum_assignment(l1)
    assert l1[rows, cols].max() < 0.15, l1[rows, cols]
    exact = dict(algorithm="esvi", esvi_update="incremental", n_blocks=3, max_iter=30, local_iter=5, seed=1)
    esvi = LDAVI(3, **exact).fit(corpus)
    assert abs(esvi.elbo_ - batch.elbo_) < 0.01 * abs(batch.elbo_)
    # ESVI's history has an ELBO curve: every round, the last one the fitted model's ELBO
    assert [h["iteration"] for h in esvi.history_] == list(range(1, 31)) and all("elbo" in h for h in esvi.history_)
    assert esvi.history_[-1]["elbo"] == pytest.approx(esvi.elbo_, rel=1e-6)
    topk = LDAVI(3, topk=2, **exact).fit(corpus)
    assert abs(topk.elbo_ - batch.elbo_) < 0.01 * abs(batch.elbo_)
    # the stochastic block update, LDA's default (SVI steps, so a looser recovery on 400 documents)
    options = dict(n_blocks=3, batch_size=40, max_iter=30, local_iter=5, seed=1)
    stochastic = LDAVI(3, algorithm="esvi", **options).fit(corpus)
    assert abs(stochastic.elbo_ - batch.elbo_) < 0.01 * abs(batch.elbo_)
    l1 = torch.cdist(stochastic.topic_word_, topics, p=1).numpy()
    rows, cols = linear_sum_assignment(l1)
    assert l1[rows, cols].max() < 0.2, l1[rows, cols]


def test_stochastic_esvi_visit_takes_svi_steps_over_every_point_once():
    """Equation (3) of gatelab.vi.base: one visit steps the block T_b ← (1 − ρ_t) T_b + ρ_t (N / |B|) S_B over
    minibatches that cover the shard once, in a fresh order each visit, with t counted on from the token's."""
    model = LDAVI(2, algorithm="esvi", esvi_update="stochastic", batch_size=3, tau=2.0, kappa=0.6)
    model._n_total, model._device = 20, torch.device("cpu")
    seen = []

    def batch(data, T_block, block, state, rows):  # a shard of 7 documents; each gives 1 + its index
        seen.append(rows)
        return torch.full_like(T_block, float((rows + 1).sum()))

    model._n_items, model._visit_batch = (lambda data: 7), batch
    state = {"order_generator": torch.Generator().manual_seed(1).get_state()}
    T, steps = model._visit_stochastic(None, torch.ones(1, 4, dtype=torch.float64), 0, 5, state)
    expect = torch.ones(1, 4, dtype=torch.float64)
    for t, rows in enumerate(seen, start=5):
        rho = (2.0 + t) ** -0.6
        expect = (1 - rho) * expect + rho * (20 / len(rows)) * float((rows + 1).sum())
    assert steps == 8 and [len(r) for r in seen] == [3, 3, 1]
    assert sorted(torch.cat(seen).tolist()) == list(range(7))
    assert torch.allclose(T, expect)
    model._visit_stochastic(None, T, 0, steps, state)
    assert not torch.equal(torch.cat(seen[3:]), torch.cat(seen[:3]))  # the next visit draws a new order


def test_stochastic_esvi_starts_warm_from_the_exact_first_pass(monkeypatch):
    """Equation (4) of gatelab.vi.base: stochastic ESVI's blocks start from T⁰ = Σ_p S⁰_p, the statistics of the
    exact first local pass that incremental ESVI and batch VI start from (their topic–word mass is the corpus's
    word count), not from SVI's random λ⁰; its step sizes are ESVI's own defaults unless given."""
    from gatelab.vi.base import ESVI_SCHEDULE, SVI_SCHEDULE, MixtureVI

    corpus, _ = synthetic_lda(n_docs=60, n_words=30, n_topics=4, doc_length=20, seed=12)
    starts = {}

    def start_only(self, data, T, *rest):
        starts[self.algorithm, self.esvi_update, self.tau] = T.clone()
        return T

    monkeypatch.setattr(MixtureVI, "_fit_esvi", start_only)
    monkeypatch.setattr(MixtureVI, "_fit_sync", start_only)
    fitted = {}
    for algorithm, update, tau in [
        ("esvi", "stochastic", None),
        ("esvi", "stochastic", 5.0),
        ("esvi", "incremental", None),
        ("batch", "incremental", None),
        ("svi", "incremental", None),
    ]:
        model = LDAVI(4, algorithm=algorithm, esvi_update=update, tau=tau, n_blocks=2, local_iter=4, seed=2)
        fitted[algorithm, update, tau] = model.fit(corpus)
    warm = starts["esvi", "stochastic", None]
    assert torch.equal(warm, starts["esvi", "incremental", None]) and torch.equal(
        warm, starts["batch", "incremental", None]
    )
    assert warm.sum() == pytest.approx(float(corpus.count.sum()), rel=1e-5)
    assert starts["svi", "incremental", None].sum() != pytest.approx(float(corpus.count.sum()), rel=0.05)
    schedule = {key: (m.config_["tau"], m.config_["kappa"]) for key, m in fitted.items()}
    assert (
        schedule["esvi", "stochastic", None] == ESVI_SCHEDULE and schedule["svi", "incremental", None] == SVI_SCHEDULE
    )
    assert schedule["esvi", "stochastic", 5.0] == (5.0, ESVI_SCHEDULE[1]) and ESVI_SCHEDULE != SVI_SCHEDULE


def test_compiled_topk_step_reaches_the_torch_fixed_point(monkeypatch):
    """ESVI-TOPK's local step: the compiled kernel (per document) and the batched torch form (compacting
    converged documents every few rounds) run the same updates, so run to a tight tolerance they agree."""
    import gatelab.vi.lda as lda_module
    from gatelab.vi._kernel import _digamma

    x = torch.tensor([0.02, 0.3, 1.0, 5.5, 6.0, 40.0, 1e4], dtype=torch.float64)
    assert torch.allclose(torch.tensor([_digamma(float(v)) for v in x], dtype=torch.float64), torch.digamma(x))
    corpus, _ = synthetic_lda(n_docs=60, n_words=40, n_topics=6, doc_length=50, alpha=0.2, seed=9)
    model = LDAVI(6, algorithm="esvi", n_blocks=2, topk=2, max_iter=2, local_tol=1e-7, local_iter=300, seed=0)
    model.dtype = torch.float64
    model.fit(corpus)
    data, T = model._prepare(corpus), model._fitted_T()
    start = model._start_gamma(data.n_docs)
    lognorm = torch.stack([model._log_z(data, start[:, b], model._elog_beta_t(T)[:, b])[0] for b in model._blocks], 1)
    columns = model._blocks[1]
    elog_beta_t = model._elog_beta_t(T)[:, columns].contiguous()
    results = {}
    for compiled in (True, False):
        monkeypatch.setattr(lda_module, "COMPILED_TOPK", compiled)
        gamma = start.clone()
        model._converge(data, gamma, elog_beta_t, columns, 1, lognorm, 1)
        results[compiled] = gamma
    assert torch.equal(results[True][:, model._blocks[0]], start[:, model._blocks[0]])  # other blocks untouched
    kept = results[True][:, columns] > 1 / 6 + 1e-9  # α = 1/K: the topics dropped fall back to it
    assert kept.sum(1).eq(1).all()  # one topic of the block kept per document
    assert torch.allclose(results[True], results[False], rtol=1e-5), (results[True] - results[False]).abs().max()


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda: LDAVI(0), "n_components must be an integer >= 1"),
        (lambda: LDAVI(50), "larger than the 3 data points"),
        (lambda: LDAVI(2, algorithm="gibbs"), "unknown algorithm"),
        (lambda: LDAVI(2, topk=5), "topk"),
        (lambda: LDAVI(2, algorithm="esvi", n_blocks=3), "n_blocks"),
        (lambda: LDAVI(2, algorithm="esvi", esvi_update="online"), "unknown esvi_update"),
    ],
)
def test_impossible_settings_are_refused(make, says):
    with pytest.raises(GatelabError, match=says):
        make().fit(np.array([[1, 2, 0], [0, 1, 1], [2, 0, 1]]))


def test_nan_in_mixture_data_is_refused():
    with pytest.raises(GatelabError, match="NaN"):
        GaussianMixtureVI(2).fit(np.array([[0.0, 1.0], [float("nan"), 2.0], [1.0, 1.0]]))


def test_lda_first_pass_gives_distinct_topics(monkeypatch):
    """The first statistics T⁰ come from a local pass run towards convergence under the random λ⁰: one step left
    φ almost uniform, so every topic of T⁰ was nearly the same word distribution (mean pairwise total variation
    0.07 here, against 0.31 now), which cost batch VI, BSP and ESVI many iterations on KOS."""
    corpus, _ = synthetic_lda(n_docs=150, n_words=60, n_topics=4, doc_length=60, seed=6)
    first = {}
    original = LDAVI._init

    def recording(self, *args):
        T, S, state = original(self, *args)
        first["T"] = T.clone()
        return T, S, state

    monkeypatch.setattr(LDAVI, "_init", recording)
    LDAVI(4, max_iter=1, local_iter=1, dtype=torch.float64, seed=0).fit(corpus)
    topics = first["T"] / first["T"].sum(1, keepdim=True)
    distance = torch.cdist(topics, topics, p=1).sum() / 2 / (4 * 3)
    assert distance > 0.2, distance


def test_lda_pass_restarts_gamma_so_a_shut_out_topic_comes_back():
    """Each pass restarts γ and runs it to convergence (as gensim and scikit-learn do). A warm start from the last
    pass keeps a topic whose γ_dk fell to α shut out of the document for good (ψ(α) ≈ −50 for α = 0.02), which
    held batch VI, BSP and ESVI 5% above gensim's KOS perplexity: here every document's main topic is shut out
    before the pass, and after it each document's proportions must be those of a fresh fit (warm 5-step passes
    leave the main topic at ≈ 0)."""
    corpus, _ = synthetic_lda(n_docs=120, n_words=60, n_topics=3, doc_length=80, alpha=0.1, seed=12)
    model = LDAVI(3, doc_topic_prior=0.02, max_iter=10, dtype=torch.float64, seed=0).fit(corpus)
    data, T = model._prepare(corpus), model._fitted_T()
    fresh = model.transform(corpus)
    main = fresh.argmax(1)
    shut = torch.nn.functional.one_hot(main, 3).bool()
    lengths = corpus.doc_lengths().double()
    gamma = torch.where(shut, torch.tensor(0.02, dtype=torch.float64), (lengths[:, None] + 0.06) / 2)
    state = {"gamma": gamma.clone()}
    model._estep(data, T, state)
    after = state["gamma"] / state["gamma"].sum(1, keepdim=True)
    assert (after.argmax(1) == main).all()
    assert (after - fresh).abs().max() < 0.02, (after - fresh).abs().max()


@pytest.mark.parametrize("algorithm", ["batch", "esvi"])
def test_with_a_validation_set_the_fit_keeps_its_best_iteration(algorithm):
    corpus, _ = synthetic_lda(n_docs=300, n_words=60, n_topics=3, doc_length=40, alpha=0.3, seed=13)
    train, val = corpus.subset(torch.arange(240)), corpus.subset(torch.arange(240, 300))
    rounds = {"batch": 12, "esvi": 3}[algorithm]
    options = dict(algorithm=algorithm, esvi_update="incremental", n_blocks=3, max_iter=rounds, local_iter=3, seed=0)
    model = LDAVI(3, **options).fit(train, val)
    scores = [h["perplexity"] for h in model.history_]
    best = min(range(len(scores)), key=scores.__getitem__)
    assert model.best_iteration_ < model.n_iter_  # here the best is not the last, so keeping the last would fail
    assert model.best_iteration_ == model.history_[best]["iteration"]
    assert model.perplexity(val) == pytest.approx(scores[best], rel=1e-6)
    assert model.elbo_ == model.history_[best]["elbo"]
