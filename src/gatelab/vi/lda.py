"""Latent Dirichlet allocation by mean-field variational inference (Blei, Ng & Jordan; Hoffman, Blei & Bach).

q(β_k) = Dir(λ_k) over words, q(θ_d) = Dir(γ_d) over topics, q(z_dn) = φ_dw. The
corpus is kept as a sparse document × word list (one entry per nonzero
count), so every update is a handful of gathers, ``logsumexp`` and
``index_add_`` over all entries at once: no Python loop over documents or words.
"""

from __future__ import annotations

import torch

from gatelab import distributed
from gatelab.data.bow import BagOfWords
from gatelab.devices import resolve_device
from gatelab.errors import GatelabError
from gatelab.vi.base import MixtureVI, _typed, dirichlet_expectation

FIRST_PASS_ITER = 20  # local steps of the first pass under the random λ⁰ (at least; more if local_iter is larger)


def completion_split(corpus: BagOfWords, seed: int = 0) -> tuple[BagOfWords, BagOfWords]:
    """Split each document's distinct words at random into halves ``(observed, scored)`` for document completion."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.rand(corpus.nnz, generator=g)
    # within each document, the entries whose random key ranks in the lower half are observed
    order = torch.argsort(corpus.doc.double() * 2 + keys.double())
    first = torch.searchsorted(corpus.doc, corpus.doc[order])
    rank = torch.arange(corpus.nnz) - first
    lengths = torch.bincount(corpus.doc, minlength=corpus.n_docs)[corpus.doc[order]]
    observed = torch.zeros(corpus.nnz, dtype=torch.bool)
    observed[order] = rank < (lengths + 1) // 2

    def part(mask):
        return BagOfWords(corpus.doc[mask], corpus.word[mask], corpus.count[mask], corpus.n_docs, corpus.n_words)

    return part(observed), part(~observed)


def as_corpus(X) -> BagOfWords:
    """A ``BagOfWords``, or a (documents × words) count matrix (numpy, torch, scipy sparse), as a BagOfWords."""
    if isinstance(X, BagOfWords):
        return X
    return BagOfWords.from_dense(X)


class LDAVI(MixtureVI):
    """LDA fitted by variational inference, in the scikit-learn shape.

    ``algorithm`` is ``batch``, ``svi``, ``bsp`` or ``esvi`` (see ``gatelab.vi.base``);
    ``topk`` (a count or a fraction of ``n_topics``) keeps only each document's
    top topics in its local updates (ESVI-TOPK). ``doc_topic_prior`` (α) and
    ``topic_word_prior`` (η) default to 1 / n_topics, as in scikit-learn and gensim.

    Fitted attributes: ``components_`` (λ, topics × words), ``topic_word_`` (the
    mean of q(β)), ``elbo_``, ``history_`` (time, ELBO, held-out perplexity),
    ``n_iter_``, ``fit_seconds_``.
    """

    _format = "gatelab-vi-lda"
    _metric = "perplexity"

    def __init__(
        self,
        n_topics: int = 10,
        *,
        doc_topic_prior: float | None = None,
        topic_word_prior: float | None = None,
        **kw,
    ):
        super().__init__(n_topics, **kw)
        self.doc_topic_prior, self.topic_word_prior = doc_topic_prior, topic_word_prior

    _MODEL_PARAMS = ("doc_topic_prior", "topic_word_prior")

    def get_params(self) -> dict:
        params = super().get_params()
        params["n_topics"] = params.pop("n_components")
        return params

    def _extra(self) -> dict:
        return {**super()._extra(), "n_words": self._n_words}

    def _set_extra(self, extra, path) -> None:
        super()._set_extra(extra, path)
        self._n_words = _typed(extra, "n_words", int, path)

    @property
    def n_topics(self) -> int:
        return self.n_components

    def _priors(self) -> tuple[float, float]:
        alpha = 1.0 / self.n_components if self.doc_topic_prior is None else self.doc_topic_prior
        eta = 1.0 / self.n_components if self.topic_word_prior is None else self.topic_word_prior
        if not (alpha > 0 and eta > 0 and alpha < float("inf") and eta < float("inf")):
            raise GatelabError(f"doc_topic_prior and topic_word_prior must be finite and > 0, got {alpha}, {eta}")
        return alpha, eta

    def _model_config(self) -> dict:
        alpha, eta = self._priors()
        return {"doc_topic_prior": alpha, "topic_word_prior": eta, "n_words": self._n_words}

    # ------------------------------------------------------------------ data
    def _prepare(self, X, train: bool = False) -> BagOfWords:
        corpus = as_corpus(X)
        if corpus.nnz == 0 or corpus.n_docs == 0:
            raise GatelabError("the corpus has no words; LDA needs at least one document with words")
        if train:
            self._n_words = corpus.n_words
        elif corpus.n_words != self._n_words:
            raise GatelabError(f"the corpus has {corpus.n_words} words but the model was fitted on {self._n_words}")
        dev = self._device
        return BagOfWords(
            corpus.doc.to(dev), corpus.word.to(dev), corpus.count.to(dev, self.dtype), corpus.n_docs, corpus.n_words
        )

    def _prepare_heldout(self, X) -> tuple[BagOfWords, BagOfWords]:
        observed, scored = completion_split(as_corpus(X), self.seed)
        return self._prepare(observed), self._prepare(scored)

    def _n_items(self, data: BagOfWords) -> int:
        return data.n_docs

    # ------------------------------------------------------------------ local updates
    def _random_gamma(self, n_docs: int, generator: torch.Generator) -> torch.Tensor:
        shape = torch.full((n_docs, self.n_components), 100.0, dtype=torch.float64)
        return (torch._standard_gamma(shape, generator=generator) / 100.0).to(self._device, self.dtype)

    def _start_gamma(self, n_docs: int) -> torch.Tensor:
        """The random start of γ for this shard's documents: document i of the whole corpus always starts
        the same way, however the corpus is sharded (chunks of 1024 documents, each seeded by its index)."""
        chunk, first, rows = 1024, self._offset, []
        for c in range(first // chunk, (first + n_docs - 1) // chunk + 1):
            block = self._random_gamma(chunk, torch.Generator().manual_seed(self.seed * 1000003 + c))
            lo, hi = max(first, c * chunk) - c * chunk, min(first + n_docs, (c + 1) * chunk) - c * chunk
            rows.append(block[lo:hi])
        return torch.cat(rows)

    def _init(self, data, n_total, generator):
        _, eta = self._priors()
        shape = torch.full((self.n_components, data.n_words), 100.0, dtype=torch.float64)
        lam0 = (torch._standard_gamma(shape, generator=generator) / 100.0).to(self._device, self.dtype)
        local_gen = torch.Generator().manual_seed(self.seed * 1000003 + distributed.rank())
        state: dict = {}
        if self.algorithm == "svi":  # Hoffman et al.'s start: a random λ, no local parameters kept
            state["generator"] = local_gen.get_state()
            return lam0 - eta, torch.zeros_like(lam0), state
        # every shard's first statistics come from a local pass under the random λ⁰, so that T = Σ_p S_p
        # holds from the start and every topic begins shaped by the data (none starts ahead of the others).
        # The pass runs γ close to its fixed point under λ⁰ (as the first E-step of Hoffman et al.'s online VB
        # and gensim's does): a single step leaves φ almost uniform over the topics, and the topics then start
        # nearly identical, which costs batch VI, BSP and ESVI tens of iterations on KOS
        gamma = state["gamma"] = self._start_gamma(data.n_docs)
        everything = torch.arange(self.n_components, device=self._device)
        elog_beta0 = dirichlet_expectation(lam0).T.contiguous()
        S = self._local_steps(data, gamma, elog_beta0, everything, max(self.local_iter, FIRST_PASS_ITER), None)
        T = distributed.all_reduce_(S.clone())
        if self.algorithm == "esvi":
            logits = self._logits(data, gamma, self._elog_beta_t(T), None)
            state["lognorm"] = torch.stack([torch.logsumexp(logits[:, b], 1) for b in self._blocks], 1)
            state["visited"] = torch.zeros(len(self._blocks), dtype=torch.bool)
        state["generator"] = local_gen.get_state()
        return T, S, state

    def _logits(self, data, gamma, elog_beta_t, topics):
        """ℓ_dwk = E[log θ_dk] + E[log β_kw] for every nonzero (d, w): (nnz × K), or over ``topics`` (D × k)."""
        elog_theta = dirichlet_expectation(gamma)
        if topics is None:
            return elog_theta[data.doc] + elog_beta_t[data.word]
        t = topics[data.doc]
        return elog_theta.gather(1, topics)[data.doc] + elog_beta_t[data.word[:, None], t]

    def _local_steps(self, data, gamma, elog_beta_t, columns, iters, topk, lognorm=None, block=None):
        """``iters`` rounds of φ ∝ exp(ℓ), γ = α + Σ_w n_dw φ_dw over the topics ``columns`` of ``gamma``.

        With ``topk``, the first round uses all of ``columns`` and the rest each document's top ``topk`` of
        them (by γ). With ``lognorm`` (ESVI), φ is normalised by all blocks' normalisers (equation (2) of
        ``gatelab.vi.base``) and this block's column of ``lognorm`` is refreshed. Returns the statistics
        ``Σ_d n_dw φ_dwk`` as (len(columns) × W).
        """
        alpha, _ = self._priors()
        k = len(columns)
        topics = None
        for it in range(iters):
            full = dirichlet_expectation(gamma)
            elog_theta = full[:, columns]
            if topk is not None and it > 0 and topics is None:
                topics = gamma[:, columns].topk(topk, 1).indices
            if topics is None:
                logits = elog_theta[data.doc] + elog_beta_t[data.word]
            else:
                logits = elog_theta.gather(1, topics)[data.doc] + elog_beta_t[data.word[:, None], topics[data.doc]]
            lse = torch.logsumexp(logits, 1)
            if lognorm is not None:
                lognorm[:, block] = lse
                lse = torch.logsumexp(lognorm, 1)
            phi = torch.exp(logits - lse[:, None]) * data.count[:, None]
            if topics is None:
                sub = torch.zeros(data.n_docs, k, dtype=gamma.dtype, device=gamma.device).index_add_(0, data.doc, phi)
            else:
                flat = (data.doc[:, None] * k + topics[data.doc]).reshape(-1)
                sub = torch.zeros(data.n_docs * k, dtype=gamma.dtype, device=gamma.device)
                sub = sub.index_add_(0, flat, phi.reshape(-1)).reshape(data.n_docs, k)
            gamma[:, columns] = alpha + sub
        flat_cols = torch.arange(k, device=gamma.device)[None, :] if topics is None else topics[data.doc]
        flat = (data.word[:, None] * k + flat_cols).reshape(-1)
        stats = torch.zeros(data.n_words * k, dtype=gamma.dtype, device=gamma.device)
        return stats.index_add_(0, flat, phi.reshape(-1)).reshape(data.n_words, k).T

    def _elog_beta_t(self, T):
        _, eta = self._priors()
        return dirichlet_expectation(eta + T).T.contiguous()

    def _estep(self, data, T, state, rows=None):
        everything = torch.arange(self.n_components, device=self._device)
        if rows is None:
            gamma = state.get("gamma")
            if gamma is None:  # SVI's final pass: fresh local parameters for every document
                gamma = state["gamma"] = self._start_gamma(data.n_docs)
            return self._local_steps(data, gamma, self._elog_beta_t(T), everything, self.local_iter, self._topk_count())
        batch = data.subset(rows.to(data.doc.device))
        gen = torch.Generator()
        gen.set_state(state["generator"])
        gamma = self._random_gamma(batch.n_docs, gen)
        state["generator"] = gen.get_state()
        return self._local_steps(batch, gamma, self._elog_beta_t(T), everything, self.local_iter, self._topk_count())

    def _ensure_local(self, data, T, state) -> None:
        if "gamma" not in state:
            self._estep(data, T, state)

    def _visit(self, data, T_block, block, state):
        _, eta = self._priors()
        columns = self._blocks[block]
        topk = self._topk_count()
        kb = None if topk is None else max(1, min(len(columns), -(-topk * len(columns) // self.n_components)))
        if kb is not None and not state["visited"][block]:
            kb_first = None  # a block's first visit considers all its topics, later visits each document's top kb
        else:
            kb_first = kb
        state["visited"][block] = True
        elog_beta_t = dirichlet_expectation(eta + T_block).T.contiguous()
        iters = self.local_iter
        return self._local_steps(
            data, state["gamma"], elog_beta_t, columns, iters, kb_first, lognorm=state["lognorm"], block=block
        )

    # ------------------------------------------------------------------ bound and parameters
    def _local_bound(self, data, T, state):
        alpha, _ = self._priors()
        gamma = state["gamma"]
        elog_theta = dirichlet_expectation(gamma)
        lse = torch.logsumexp(elog_theta[data.doc] + self._elog_beta_t(T)[data.word], 1)
        k = self.n_components
        doc_part = ((alpha - gamma) * elog_theta + torch.lgamma(gamma)).sum() - data.n_docs * k * _lgamma(alpha)
        doc_part = doc_part + data.n_docs * _lgamma(k * alpha) - torch.lgamma(gamma.sum(1)).sum()
        return (data.count * lse).sum().double() + doc_part.double()

    def _global_bound(self, T):
        _, eta = self._priors()
        lam = (eta + T).double()
        elog_beta = dirichlet_expectation(lam)
        w = lam.shape[1]
        part = ((eta - lam) * elog_beta + torch.lgamma(lam)).sum() - lam.numel() * _lgamma(eta)
        return part + lam.shape[0] * _lgamma(w * eta) - torch.lgamma(lam.sum(1)).sum()

    def _set_params(self, T):
        _, eta = self._priors()
        self.components_ = (eta + T).cpu()
        self.topic_word_ = self.components_ / self.components_.sum(1, keepdim=True)

    def _doc_topics(self, corpus: BagOfWords, T) -> torch.Tensor:
        """γ of each document of ``corpus`` under fixed topics (statistics ``T``), from a seeded start."""
        gen = torch.Generator().manual_seed(self.seed + 7)
        gamma = self._random_gamma(corpus.n_docs, gen)
        everything = torch.arange(self.n_components, device=self._device)
        self._local_steps(corpus, gamma, self._elog_beta_t(T), everything, max(self.local_iter, 20), None)
        return gamma

    def _evaluate(self, T, held) -> float:
        """Per-word perplexity of the scored halves given γ fitted on the observed halves (document completion)."""
        observed, scored = held
        gamma = self._doc_topics(observed, T)
        theta = gamma / gamma.sum(1, keepdim=True)
        _, eta = self._priors()
        lam = eta + T
        beta = lam / lam.sum(1, keepdim=True)
        prob = (theta[scored.doc] * beta.T[scored.word]).sum(1)
        loglik = (scored.count.double() * torch.log(prob.double())).sum()
        return float(torch.exp(-loglik / scored.count.double().sum()))

    # ------------------------------------------------------------------ the scikit-learn surface
    @classmethod
    def from_components(cls, components, doc_topic_prior: float, topic_word_prior: float, **kw) -> "LDAVI":
        """A fitted model from another tool's topic–word Dirichlet parameters λ (topics × words), so that its
        topics are scored by the same ``perplexity`` and ``score`` as ours (gensim: ``state.get_lambda()``;
        scikit-learn: ``components_``)."""
        lam = torch.as_tensor(components, dtype=torch.float64)
        if lam.dim() != 2 or not torch.isfinite(lam).all() or (lam <= 0).any():
            raise GatelabError(f"components must be a positive (topics × words) matrix, got shape {tuple(lam.shape)}")
        model = cls(lam.shape[0], doc_topic_prior=doc_topic_prior, topic_word_prior=topic_word_prior, **kw)
        model._device = resolve_device(model.device)
        model._n_words, model._n_total, model._offset = lam.shape[1], 0, 0
        model._priors()
        model._set_params((lam - topic_word_prior).to(model._device, model.dtype))
        return model

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise GatelabError("this LDAVI is not fitted yet; call fit first (or load a saved model)")

    def _fitted_T(self) -> torch.Tensor:
        _, eta = self._priors()
        return (self.components_ - eta).to(self._device, self.dtype)

    def transform(self, X) -> torch.Tensor:
        """Each document's topic proportions (the mean of q(θ_d)), documents × topics."""
        self._check_fitted()
        gamma = self._doc_topics(self._prepare(X), self._fitted_T())
        return (gamma / gamma.sum(1, keepdim=True)).cpu()

    def score(self, X) -> float:
        """The ELBO of ``X`` under the fitted topics (γ fitted per document; the topic term included)."""
        self._check_fitted()
        data = self._prepare(X)
        T = self._fitted_T()
        state = {"gamma": self._doc_topics(data, T)}
        return float(self._local_bound(data, T, state) + self._global_bound(T))

    def perplexity(self, X, seed: int | None = None) -> float:
        """Held-out per-word perplexity of ``X`` by document completion (half of each document's words fit γ,
        the other half are scored)."""
        self._check_fitted()
        observed, scored = completion_split(as_corpus(X), self.seed if seed is None else seed)
        return self._evaluate(self._fitted_T(), (self._prepare(observed), self._prepare(scored)))

    def top_words(self, n: int = 10, vocab: list[str] | None = None) -> list[list]:
        """The ``n`` most probable words (or word ids, without ``vocab``) of each topic."""
        self._check_fitted()
        ids = self.topic_word_.topk(min(n, self.topic_word_.shape[1]), 1).indices.tolist()
        return [[vocab[i] for i in row] if vocab is not None else row for row in ids]


def _lgamma(x: float) -> torch.Tensor:
    return torch.lgamma(torch.tensor(float(x), dtype=torch.float64))
