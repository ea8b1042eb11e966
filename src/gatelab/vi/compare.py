"""Side-by-side runs for the benchmarks and reproductions: gatelab's algorithms and the peers on the same data.

Every run returns a history, a list of ``{"iteration", "time", METRIC}`` with
the metric scored on the same validation set by the same code (held-out
perplexity by document completion for LDA, mean log-likelihood per point for
mixtures), and ``time`` the training seconds only. ``time_to_reach`` reads the
time a history first reaches a target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse

from gatelab.data.bow import BagOfWords
from gatelab.errors import GatelabError
from gatelab.vi.lda import LDAVI


def _peer_missing(name: str, extra: str) -> GatelabError:
    return GatelabError(f"the peer {name} is not installed; pip install 'gatelab[{extra}]'")


def time_to_reach(history: list[dict], target: float, metric: str, lower_is_better: bool = True) -> float | None:
    """The first time at which ``history`` reaches ``target`` (None if it never does)."""
    for h in history:
        if metric in h and (h[metric] <= target if lower_is_better else h[metric] >= target):
            return h["time"]
    return None


def _csr(corpus: BagOfWords) -> scipy.sparse.csr_matrix:
    return scipy.sparse.csr_matrix(
        (corpus.count.numpy(), (corpus.doc.numpy(), corpus.word.numpy())), shape=(corpus.n_docs, corpus.n_words)
    )


def gensim_lda(train: BagOfWords, val: BagOfWords, n_topics: int, workers: int, passes: int, seed: int = 0):
    """gensim's ``LdaMulticore`` (online VB, ``workers`` processes), one pass at a time; α = η = 1/K."""
    try:
        from gensim.matutils import Sparse2Corpus
        from gensim.models import LdaMulticore
    except ImportError:
        raise _peer_missing("gensim", "vi") from None
    corpus = list(Sparse2Corpus(_csr(train), documents_columns=False))
    prior = 1.0 / n_topics
    history, elapsed, model = [], 0.0, None
    for p in range(1, passes + 1):
        clock = time.perf_counter()
        if model is None:
            model = LdaMulticore(
                corpus, num_topics=n_topics, id2word={i: str(i) for i in range(train.n_words)}, workers=workers,
                passes=1, alpha=prior, eta=prior, random_state=seed, chunksize=2000,
            )  # fmt: skip
        else:
            model.update(corpus)
        elapsed += time.perf_counter() - clock
        lam = model.state.get_lambda()
        score = LDAVI.from_components(lam, prior, prior, seed=seed).perplexity(val)
        history.append({"iteration": p, "time": elapsed, "perplexity": score})
    return history, model.state.get_lambda()


def sklearn_lda(train: BagOfWords, val: BagOfWords, n_topics: int, n_jobs: int, passes: int, seed: int = 0):
    """scikit-learn's ``LatentDirichletAllocation`` (online, ``n_jobs``), one ``partial_fit`` pass at a time."""
    try:
        from sklearn.decomposition import LatentDirichletAllocation
    except ImportError:
        raise _peer_missing("scikit-learn", "vi") from None
    prior = 1.0 / n_topics
    model = LatentDirichletAllocation(
        n_components=n_topics, learning_method="online", n_jobs=n_jobs, doc_topic_prior=prior,
        topic_word_prior=prior, batch_size=256, total_samples=train.n_docs, random_state=seed,
    )  # fmt: skip
    X = _csr(train)
    history, elapsed = [], 0.0
    for p in range(1, passes + 1):
        clock = time.perf_counter()
        model.partial_fit(X)
        elapsed += time.perf_counter() - clock
        score = LDAVI.from_components(model.components_, prior, prior, seed=seed).perplexity(val)
        history.append({"iteration": p, "time": elapsed, "perplexity": score})
    return history, model.components_


def sklearn_gmm(train, val, n_components: int, iterations: int, seed: int = 0):
    """scikit-learn's ``BayesianGaussianMixture`` (diagonal, Dirichlet weights 1/K), one EM step at a time."""
    try:
        from sklearn.mixture import BayesianGaussianMixture
    except ImportError:
        raise _peer_missing("scikit-learn", "vi") from None
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    x, xv = np.asarray(train, dtype=np.float64), np.asarray(val, dtype=np.float64)
    model = BayesianGaussianMixture(
        n_components=n_components, covariance_type="diag", weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=1.0 / n_components, mean_precision_prior=1.0, max_iter=1, warm_start=True,
        init_params="k-means++", random_state=seed,
    )  # fmt: skip
    history, elapsed = [], 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(1, iterations + 1):
            clock = time.perf_counter()
            model.fit(x)
            elapsed += time.perf_counter() - clock
            history.append({"iteration": i, "time": elapsed, "loglik": float(model.score(xv))})
    return history, model


def gatelab_fit(model, train, val) -> list[dict]:
    """Fit one of ours with the validation set scored along the way; its history."""
    model.fit(train, val)
    return model.history_


def torchrun_fit(command: list[str], nproc: int, timeout: float = 3600) -> tuple[list[dict], dict]:
    """Run ``gatelab vi ...`` under ``torchrun --nproc-per-node nproc`` into a temporary folder; its history
    and metrics (the ranks read their own shards; the splits are the ones a single process uses)."""
    with tempfile.TemporaryDirectory(prefix="gatelab-vi-") as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
        cmd += ["-m", "gatelab", *command, "--out", str(out), "--quiet"]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-3:]
            raise GatelabError(f"torchrun with {nproc} processes failed: {' | '.join(tail)}")
        return json.loads((out / "history.json").read_text()), json.loads((out / "metrics.json").read_text())
