"""Latent Dirichlet allocation by mean-field variational inference (Blei, Ng & Jordan; Hoffman, Blei & Bach).

q(β_k) = Dir(λ_k) over words, q(θ_d) = Dir(γ_d) over topics, q(z_dn) = φ_dw. The
corpus is kept as a sparse document × word list (one entry per nonzero
count), so every update is a handful of gathers, ``logsumexp`` and
``index_add_`` over all entries at once: no Python loop over documents or words.
"""

from __future__ import annotations

import warnings

import torch

from gatelab import distributed
from gatelab.data.bow import BagOfWords
from gatelab.devices import resolve_device
from gatelab.errors import GatelabError
from gatelab.vi._kernel import topk_converge
from gatelab.vi.base import MixtureVI, _typed, dirichlet_expectation

FIRST_PASS_ITER = 20  # local steps of the first pass under the random λ⁰ (at least; more if local_iter is larger)
SCORE_ITER = 100  # at most this many local steps when fitting γ of new documents (scoring, transform)
_TINY = 1e-30  # floor of the normaliser z_dw (all of a document's topics far from a word)
CONVERGENCE_CHECK = 4  # local steps between convergence checks (each check is one host read)
COMPILED_TOPK = True  # ESVI-TOPK's local step on the CPU by the compiled kernel (False: the batched torch form)


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
    Each pass restarts every document's γ and runs it until its mean change is
    below ``local_tol``, at most ``local_iter`` steps (gensim: ``gamma_threshold``
    0.001, ``iterations`` 50; scikit-learn: ``mean_change_tol``, ``max_doc_update_iter``).
    ESVI's block update defaults to the stochastic form, warm-started (equations (3) and (4) of
    ``gatelab.vi.base``): on KOS it beat the exact incremental update (1), which overfits, on the
    validation split at K = 20 and 50 (README); ``esvi_update="incremental"`` keeps (1).

    Fitted attributes: ``components_`` (λ, topics × words), ``topic_word_`` (the
    mean of q(β)), ``elbo_``, ``history_`` (time, ELBO, held-out perplexity),
    ``n_iter_``, ``fit_seconds_``.
    """

    _format = "gatelab-vi-lda"
    _metric = "perplexity"
    _lower_is_better = True

    def __init__(
        self,
        n_topics: int = 10,
        *,
        doc_topic_prior: float | None = None,
        topic_word_prior: float | None = None,
        local_tol: float = 1e-3,
        **kw,
    ):
        kw.setdefault("local_iter", 50)
        kw.setdefault("esvi_update", "stochastic")  # see the class docstring
        super().__init__(n_topics, **kw)
        self.doc_topic_prior, self.topic_word_prior, self.local_tol = doc_topic_prior, topic_word_prior, local_tol

    _MODEL_PARAMS = ("doc_topic_prior", "topic_word_prior", "local_tol")

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
        tol = self.local_tol
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < float("inf"):
            raise GatelabError(f"local_tol must be a finite number >= 0 (0: always local_iter steps), got {tol!r}")
        return {"doc_topic_prior": alpha, "topic_word_prior": eta, "local_tol": tol, "n_words": self._n_words}

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
        # the restart point of every pass (batch, BSP, ESVI): each document's seeded random γ
        self._gamma0 = self._start_gamma(data.n_docs)
        # every shard's first statistics come from a local pass under the random λ⁰, so that T = Σ_p S_p
        # holds from the start and every topic begins shaped by the data (none starts ahead of the others).
        # The pass runs γ to its fixed point under λ⁰ (as the first E-step of Hoffman et al.'s online VB
        # and gensim's does), at least FIRST_PASS_ITER steps: a single step leaves φ almost uniform over the
        # topics, and the topics then start nearly identical
        gamma = state["gamma"] = self._gamma0.clone()
        everything = torch.arange(self.n_components, device=self._device)
        elog_beta0 = dirichlet_expectation(lam0).T.contiguous()
        self._converge(data, gamma, elog_beta0, everything, None, max_iter=max(self.local_iter, FIRST_PASS_ITER))
        # T⁰ = Σ_p S⁰_p: the start of equation (1) of gatelab.vi.base, and the warm start (4) of its
        # stochastic form, whose steps (3) refine this fit of the whole corpus (not the random λ⁰ as SVI's do)
        S, _ = self._stats(data, gamma, elog_beta0, everything, None)
        T = distributed.all_reduce_(S.clone())
        if self.algorithm == "esvi":  # the per-block normalisers log z_{d,w,b} of equation (2), under T⁰
            elog_beta_t = self._elog_beta_t(T)
            state["lognorm"] = torch.stack(
                [self._log_z(data, gamma[:, b], elog_beta_t[:, b])[0] for b in self._blocks], 1
            )
        state["generator"] = local_gen.get_state()
        return T, S, state

    def _by_word(self, data: BagOfWords) -> tuple[torch.Tensor, torch.Tensor]:
        """The entries of ``data`` in word order and the row pointers of that order: the word × document CSR
        layout, for the statistics Σ_d n_dw φ_dwk as one sparse product (kept for the training shard)."""
        cached = getattr(self, "_by_word_cache", None)
        if cached is not None and cached[0] is data:
            return cached[1], cached[2]
        order = torch.argsort(data.word * data.n_docs + data.doc)
        rows = _row_pointers(data.word[order], data.n_words)
        self._by_word_cache = (data, order, rows)
        return order, rows

    def _exp_parts(self, psi, elog_beta_t, topics=None):
        """a_dk = exp(ψ(γ_dk) − max_k), b_kw = exp(E[log β_kw] − max_k) (as W × k) and the two maxima; with
        ``topics``, a is zero outside each document's top topics."""
        top = psi.max(1, keepdim=True).values
        a = torch.exp(psi - top)
        if topics is not None:
            a = torch.zeros_like(a).scatter_(1, topics, a.gather(1, topics))
        top_beta = elog_beta_t.max(1, keepdim=True).values
        return a, torch.exp(elog_beta_t - top_beta), top[:, 0], top_beta[:, 0]

    def _converge(self, data, gamma, elog_beta_t, columns, topk, lognorm=None, block=None, max_iter=None) -> None:
        """Run φ ∝ exp(ℓ), γ = α + Σ_w n_dw φ_dw over the topics ``columns`` of ``gamma`` (in place) from its
        present value until each document's mean |Δγ_d| is below ``local_tol`` (gensim's ``gamma_threshold``,
        scikit-learn's ``mean_change_tol``), or ``max_iter`` (default ``local_iter``) rounds.

        As gensim does, φ is never formed: with a_dk = exp ψ(γ_dk) and b_kw = exp E[log β_kw], one round is
        z_dw = Σ_k a_dk b_kw and γ_dk = α + a_dk Σ_w b_kw n_dw / z_dw: a sampled dense product and a sparse
        × dense product over the document × word matrix, no exp or log per entry (each word's b and each
        document's a are scaled to a largest value of 1, which cancels in φ and keeps float32 from
        underflowing; the −ψ(Σ_k γ_dk) of E[log θ] cancels too). Documents stop once converged: every
        CONVERGENCE_CHECK rounds the finished ones are written back and the rest (documents and entries)
        compacted, so the work shrinks as documents converge; that check is the only host read.
        With ``topk``, the first round uses all of ``columns`` and the rest each document's top ``topk`` of
        them (by γ after the first round; the others fall to α), gathered per entry; on the CPU the compiled
        ``gatelab.vi._kernel.topk_converge`` does the same per document, checking convergence every round.
        With ``lognorm`` (ESVI), z_dw also adds the other blocks' normalisers (fixed while this block is
        visited): equation (2) of ``gatelab.vi.base``.
        """
        alpha, _ = self._priors()
        tol = self.local_tol
        max_iter = self.local_iter if max_iter is None else max_iter
        ids = torch.arange(data.n_docs, device=gamma.device)  # the documents still iterating
        doc, word, count = data.doc, data.word, data.count
        rows = _row_pointers(doc, data.n_docs)
        g = gamma[:, columns]
        top_beta = elog_beta_t.max(1).values
        b = torch.exp(elog_beta_t - top_beta[:, None])
        rest = None  # the other blocks' log-normalisers, in the scale of this block's b
        if lognorm is not None and lognorm.shape[1] > 1:
            others = [c for c in range(lognorm.shape[1]) if c != block]
            rest = torch.logsumexp(lognorm[:, others], 1) - top_beta[word]
        if topk is not None and COMPILED_TOPK and gamma.device.type == "cpu":
            no_rest = torch.empty(0, dtype=b.dtype)
            topk_converge(
                rows.numpy(), word.numpy(), count.numpy(), (no_rest if rest is None else rest).numpy(),
                b.contiguous().numpy(), g.numpy(), topk, alpha, tol, max_iter,
            )  # fmt: skip
            gamma[:, columns] = g
            return
        topics = entry_b = None
        for it in range(max_iter):
            psi = torch.digamma(g)
            top = psi.max(1, keepdim=True).values
            a = torch.exp(psi - top)
            if topics is None:
                z = _sampled_product(rows, word, a, b, data.n_words)
            else:
                a = a.gather(1, topics)
                z = (a[doc] * entry_b).sum(1)
            if rest is not None:
                z = z + torch.exp(rest - top[doc, 0])
            ratio = count / z.clamp_min(_TINY)
            if topics is None:
                new = alpha + (_csr(rows, word, ratio, (len(ids), data.n_words)) @ b) * a
            else:
                sums = torch.zeros_like(a).index_add_(0, doc, entry_b * ratio[:, None]) * a
                new = torch.full_like(g, alpha).scatter_(1, topics, alpha + sums)
            done = (new - g).abs().mean(1) < tol
            g = new
            if topk is not None and topics is None:
                topics = g.topk(topk, 1).indices
                entry_b = b[word[:, None], topics[doc]]
            if (it + 1) % CONVERGENCE_CHECK or it + 1 == max_iter:
                continue
            n_done = int(done.sum())
            if n_done == 0:
                continue
            gamma[ids[done][:, None], columns] = g[done]
            if n_done == len(ids):
                return
            keep = ~done
            position = torch.cumsum(keep, 0) - 1
            entries = keep[doc]
            ids, g, doc = ids[keep], g[keep], position[doc[entries]]
            word, count = word[entries], count[entries]
            rows = _row_pointers(doc, len(ids))
            rest = None if rest is None else rest[entries]
            topics = None if topics is None else topics[keep]
            entry_b = None if entry_b is None else entry_b[entries]
        gamma[ids[:, None], columns] = g

    def _log_z(self, data, g, elog_beta_t, topics=None):
        """log Σ_k exp(ψ(γ_dk) + E[log β_kw]) over the k columns of ``g`` (or each document's ``topics``) for
        every entry, with the parts it came from: ``(log z, z, a, b)`` (see ``_converge``)."""
        a, b, top, top_beta = self._exp_parts(torch.digamma(g), elog_beta_t, topics)
        z = _sampled_product(_row_pointers(data.doc, data.n_docs), data.word, a, b, data.n_words).clamp_min(_TINY)
        return torch.log(z) + top[data.doc] + top_beta[data.word], z, a, b

    def _stats(self, data, gamma, elog_beta_t, columns, topk, lognorm=None, block=None):
        """φ under ``gamma`` for the topics ``columns`` (each document's top ``topk`` of them, if given), and from
        it the statistics ``Σ_d n_dw φ_dwk`` (len(columns) × W), as b_kw Σ_d a_dk v_dw with v = n φ / (a b) a
        sparse word × document matrix; with ``lognorm`` (ESVI), φ is normalised over all blocks
        (equation (2)) and this block's column of ``lognorm`` is set."""
        g = gamma[:, columns]
        topics = None if topk is None else g.topk(topk, 1).indices
        lse, z, a, b = self._log_z(data, g, elog_beta_t, topics)
        scale = data.count / z
        if lognorm is not None:
            lognorm[:, block] = lse
            scale = scale * torch.exp(lse - torch.logsumexp(lognorm, 1))
        order, rows = self._by_word(data)
        by_word = _csr(rows, data.doc[order], scale[order], (data.n_words, data.n_docs))
        return ((by_word @ a) * b).T, lse

    def _elog_beta_t(self, T):
        _, eta = self._priors()
        return dirichlet_expectation(eta + T).T.contiguous()

    def _estep(self, data, T, state, rows=None):
        """Restart and converge: every document's γ starts again from its seeded random start and is run to
        convergence under ``T`` (as gensim and scikit-learn do each pass). Warm-starting from the last pass
        instead lets a topic that fell to γ_dk ≈ α early stay shut out of the document for good (ψ(α) is
        very negative for a small α), which held batch VI 5% above gensim's perplexity on KOS.

        For the whole shard (batch, BSP), each document keeps the better of the restarted and the previous
        γ by its own term of the ELBO under ``T``, so the ELBO still never decreases across iterations."""
        everything = torch.arange(self.n_components, device=self._device)
        elog_beta_t = self._elog_beta_t(T)
        topk = self._topk_count()
        if rows is not None:  # SVI: a minibatch, from a fresh random start
            batch = data.subset(rows.to(data.doc.device))
            gen = torch.Generator()
            gen.set_state(state["generator"])
            gamma = self._random_gamma(batch.n_docs, gen)
            state["generator"] = gen.get_state()
            self._converge(batch, gamma, elog_beta_t, everything, topk)
            return self._stats(batch, gamma, elog_beta_t, everything, topk)[0]
        previous = state.get("gamma")
        gamma = self._start_gamma(data.n_docs) if previous is None else self._gamma0.clone()
        self._converge(data, gamma, elog_beta_t, everything, topk)
        if previous is not None:
            worse = self._doc_bound(data, gamma, elog_beta_t) < self._doc_bound(data, previous, elog_beta_t)
            gamma[worse] = previous[worse]
        state["gamma"] = gamma
        return self._stats(data, gamma, elog_beta_t, everything, topk)[0]

    def _ensure_local(self, data, T, state) -> None:
        if "gamma" not in state:
            self._estep(data, T, state)

    def _local_snapshot(self, state: dict) -> dict:
        return {"gamma": state["gamma"].clone()}

    def _visit(self, data, T_block, block, state):
        """ESVI: restart this block's columns of γ from the documents' random start and converge them, the other
        blocks held fixed through their normalisers; the shard's new statistics for the block."""
        _, eta = self._priors()
        elog_beta_t = dirichlet_expectation(eta + T_block).T.contiguous()
        return self._block_step(data, state["gamma"], state["lognorm"], self._gamma0, elog_beta_t, block)

    def _visit_batch(self, data, T_block, block, state, rows):
        """ESVI, stochastic form: ``_visit`` on the documents ``rows`` alone, over the words they use (E[log β]
        of the block on those words only, the statistics scattered back into the whole vocabulary)."""
        batch, entries = data.subset_with_entries(rows)
        words, local = torch.unique(batch.word, return_inverse=True)
        batch = BagOfWords(batch.doc, local, batch.count, batch.n_docs, len(words))
        _, eta = self._priors()
        lam = eta + T_block
        elog_beta_t = (torch.digamma(lam[:, words]) - torch.digamma(lam.sum(1, keepdim=True))).T.contiguous()
        gamma, lognorm = state["gamma"][rows], state["lognorm"][entries]
        stats = self._block_step(batch, gamma, lognorm, self._gamma0[rows], elog_beta_t, block)
        state["gamma"][rows], state["lognorm"][entries] = gamma, lognorm
        return torch.zeros_like(T_block).index_copy_(1, words, stats)

    def _block_step(self, data, gamma, lognorm, gamma0, elog_beta_t, block):
        """Restart, converge and take the statistics of the columns of ``block`` in ``gamma`` (in place, with
        ``lognorm``, the per-entry block normalisers of ``data``), from the random start ``gamma0``, under the
        block's E[log β] (words × the block's topics)."""
        columns = self._blocks[block]
        topk = self._topk_count()
        kb = None if topk is None else max(1, min(len(columns), -(-topk * len(columns) // self.n_components)))
        # restart within the block: the documents' random start, scaled to the mass the block holds now plus the
        # start's own (about 1 a topic, as a full restart gives every topic), so the block's topics compete again
        # among themselves, a block shut out of a document can come back, and a block keeps its share against
        # the fixed others (the start alone, without the block's mass, lost that share at every visit)
        start = gamma0[:, columns]
        mass = start.sum(1, keepdim=True)
        gamma[:, columns] = start * ((gamma[:, columns].sum(1, keepdim=True) + mass) / mass)
        self._converge(data, gamma, elog_beta_t, columns, kb, lognorm, block)
        return self._stats(data, gamma, elog_beta_t, columns, kb, lognorm, block)[0]

    # ------------------------------------------------------------------ bound and parameters
    def _doc_bound(self, data, gamma, elog_beta_t) -> torch.Tensor:
        """Each document's term of the ELBO (φ at its optimum given γ), without the terms constant in γ:
        Σ_w n_dw log Σ_k exp(E[log θ_dk] + E[log β_kw]) + Σ_k ((α − γ_dk) E[log θ_dk] + log Γ(γ_dk))
        − log Γ(Σ_k γ_dk)."""
        alpha, _ = self._priors()
        lse = self._log_z(data, gamma, elog_beta_t)[0]
        words = torch.zeros(data.n_docs, dtype=gamma.dtype, device=gamma.device).index_add_(
            0, data.doc, data.count * lse
        )
        total = gamma.sum(1)
        elog_theta = torch.digamma(gamma) - torch.digamma(total)[:, None]
        words = words - torch.digamma(total) * (total - alpha * gamma.shape[1])  # Σ_w n_dw = Σ_k γ_dk − Kα
        return words + ((alpha - gamma) * elog_theta + torch.lgamma(gamma)).sum(1) - torch.lgamma(total)

    def _local_bound(self, data, T, state):
        alpha, _ = self._priors()
        k = self.n_components
        docs = self._doc_bound(data, state["gamma"], self._elog_beta_t(T)).double().sum()
        return docs + data.n_docs * (_lgamma(k * alpha) - k * _lgamma(alpha))

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
        """γ of each document of ``corpus`` under fixed topics (statistics ``T``), from a seeded start, run to
        convergence (at most max(local_iter, SCORE_ITER) steps)."""
        gen = torch.Generator().manual_seed(self.seed + 7)
        gamma = self._random_gamma(corpus.n_docs, gen)
        everything = torch.arange(self.n_components, device=self._device)
        self._converge(corpus, gamma, self._elog_beta_t(T), everything, None, max_iter=max(self.local_iter, SCORE_ITER))
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


def _row_pointers(rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """CSR row pointers of sorted row indices."""
    pointers = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    pointers[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    return pointers


def _csr(pointers, columns, values, shape) -> torch.Tensor:
    with warnings.catch_warnings():  # torch says once that sparse CSR is "beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(pointers, columns, values, shape, check_invariants=False)


def _sampled_product(pointers, columns, a, b, n_cols) -> torch.Tensor:
    """Σ_k a_dk b_wk at the nonzeros (d, w) of the CSR pattern: the sampled dense product (SDDMM)."""
    pattern = _csr(pointers, columns, torch.ones_like(columns, dtype=a.dtype), (a.shape[0], n_cols))
    return torch.sparse.sampled_addmm(pattern, a, b.T, beta=0.0).values()


def _lgamma(x: float) -> torch.Tensor:
    return torch.lgamma(torch.tensor(float(x), dtype=torch.float64))
