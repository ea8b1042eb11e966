"""WordRank: word embeddings learned by robust ranking.

Ji, Yun, Yanardag, Matsushima & Vishwanathan, "WordRank: Learning Word Embeddings via Robust
Ranking" (EMNLP 2016, arXiv:1506.02761). For each word w, its observed contexts c should rank
above the other contexts. With scores s_wc = <u_w, v_c> and the authors' conventions (their
code, ``shihaoji/wordrank``):

- the rank surrogate ``S_wc = sum over all contexts c' of l(s_wc' - s_wc)`` (c' = c included,
  adding l(0) = 1), with l the hinge ``max(0, x + 1)`` (default) or the logistic ``log2(1 + 2**x)``;
- the objective ``J = sum over nonzeros of r_wc * rho(S_wc)`` with weights
  ``r_wc = min(1, (X_wc / x_max) ** epsilon)`` and a concave transformation of the rank:
  ``rho1 = alpha * log2((S + beta) / alpha)`` (the default), ``rho3 = alpha * log_t((S + beta) / alpha)``
  with ``log_t(x) = (x**(1-t) - 1) / (1 - t)``, and ``rho2 = 1 - 1 / log2(S + 1)`` (the paper's
  1 - 1/log2(rank + 2));
- each rho is linearised by its tangent at an auxiliary xi_wc (:func:`bound`), so that between
  xi updates the objective is ``sum r_wc * g(xi_wc) * S_wc`` plus constants, with
  ``g = xi / ln 2``, ``ln 2 * xi / ln(xi)**2`` and ``xi**t`` for rho1, rho2, rho3;
- every ``period`` epochs xi is set in closed form: ``alpha / (S + beta)`` for rho1 and rho3 (the
  exact minimiser of the bound, where it touches rho) and the authors' rule
  ``(beta / 2 + 1) / (sqrt(S) + 1 + beta)`` for rho2 (their bound adds a Gamma prior on xi);
- stochastic gradient steps sample, for an observed (w, c), one context c' uniformly from the
  others and descend ``r_wc * g(xi_wc) * l(s_wc' - s_wc)``, ``sgd_num`` times per nonzero an
  epoch (plain SGD as the authors, or AdaGrad, see :class:`WordRankConfig`); vectors start
  uniform in [0, 1) and normalised, as theirs.

Threads update the shared matrices without locks (Hogwild, numba ``prange``). ``wv`` holds the
word vectors U: the authors evaluate word similarity on U alone (their ``scripts/eval.sh`` runs
hyperwords' ``ws_eval.py`` without ``--w+c``; only analogies use word + context). V is a poor
embedding here: with uniform negatives, a rare context is mostly pushed away from the average
word, so U + V scored near zero on WS-353 where U scores as word2vec does. All three sets are
available (:meth:`WordRank.vectors`).
Under ``torchrun`` (:mod:`gatelab.distributed`), the authors' block schedule (their MPI
``model.hpp``): words and contexts are cut into ``p`` blocks of about equal nonzeros
(:func:`block_bounds`, on the frequency-sorted words dealt out in turn, so that each block mixes
frequent and rare words; see ``WordRank._train_blocks``); in sub-epoch ``s`` of an epoch, rank ``r``
trains the nonzeros of word block ``r`` whose context lies in context block ``(r + s) mod p``,
drawing negatives from that block only, so no two ranks touch the same rows. After each sub-epoch
the context blocks are exchanged by an all-reduce of the disjoint blocks (each rank zeroes the
rest) rather than a ring of sends: it runs through :func:`gatelab.distributed.all_reduce_`, whose
watchdog names a lost peer instead of hanging, and leaves every rank with all of V, which the xi
update (rank sums over all contexts) and the checkpoints need; with 2 processes it moves about as
much as a ring would. U is gathered only for checkpoints, xi updates (each rank then sums the ranks
of a share of the words) and the end.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from gatelab import distributed
from gatelab.checkpoint import Checkpointer, Interrupted, check_resumable, load_state, rng_state, set_rng_state
from gatelab.embeddings.cooccurrence import CooccurrenceMatrix, count_cooccurrences
from gatelab.embeddings.keyedvectors import KeyedVectors
from gatelab.errors import GatelabError, check_choice
from gatelab.files import check_output_path, write_json
from gatelab.progress import ScalarLog, bar, say

RHOS = ("rho1", "rho2", "rho3")
LOSSES = ("hinge", "logistic")
FORMAT = "gatelab.wordrank"
SUMS = ("HU", "HV")  # AdaGrad's sums of squared gradients of U and V: checkpointed under AdaGrad only
#: config fields a resumed run may change: they alter speed, not the result of one thread
RESUMABLE_CHANGES = ("workers", "epochs")
_LN2 = math.log(2.0)
#: tokens of text8, the corpus of the authors' demo (``scripts/demo.sh``), where they use x_max = 100
TEXT8_TOKENS = 17_005_207


@dataclass
class WordRankConfig:
    """Hyperparameters. The objective's (rho, loss, alpha, beta, t, epsilon) are the authors' published
    settings; ``x_max="auto"`` (the default) scales their 100 to the corpus size (:func:`corpus_x_max`:
    100 on text8 and larger corpora, 5.9 on 1M tokens).

    The optimiser is the authors' (their ``model.hpp``), sized for minutes rather than hours: plain SGD
    (``optimizer="sgd"``) with a constant step ``lr * r * g(xi) * nnz / sum(r)``, xi starting at 1 (0.5 for
    rho2), ``epochs`` sweeps of ``sgd_num`` updates per nonzero, xi re-estimated every ``period`` epochs
    (never in the last). They run 9,100 to 50,000 sweeps at lr 0.001, with the first xi update after
    1,100 or more. The defaults here are 100 sweeps at lr 0.003 and no xi update within them: so early,
    the rank surrogates still measure context frequency more than relevance, and an update shifts the
    objective's weight towards the most frequent contexts (on 1M tokens of Brown + PTB, one update at
    sweep 50 cost 0.07 on WS-353). Longer runs update xi every 100 epochs (the authors' binary's default
    period). After an update, the steps are rescaled so that their r-weighted mean stays where it
    started: the update reweights the pairs, where the authors' steps all shrink with xi (about 10x
    here, which stalls a short run). ``"adagrad"`` divides each coordinate's step by its accumulated
    gradient norm, as GloVe trains (with lr about 0.05); on Brown + PTB it learns WS-353 as well but
    SimLex-999 worse. ``reg``: an L2 penalty per AdaGrad update (the authors' runs: 0; plain SGD has
    none). ``job_pairs``: updates between checkpoint and Ctrl-C checks.
    """

    vector_size: int = 100
    window: int = 15
    min_count: int = 5
    max_vocab_size: int | None = None
    rho: str = "rho1"
    loss: str = "hinge"
    alpha: float = 100.0
    beta: float = 99.0
    t: float = 1.5
    x_max: float | str = "auto"
    epsilon: float = 0.75
    lr: float = 0.003
    epochs: int = 100
    sgd_num: int = 1
    period: int = 100
    workers: int = 1
    seed: int = 1
    job_pairs: int = 1 << 16
    optimizer: str = "sgd"
    reg: float = 0.0
    device: str = "cpu"

    def validate(self) -> "WordRankConfig":
        def need(cond, what):
            if not cond:
                raise GatelabError(what)

        for name in ("vector_size", "window", "min_count", "epochs", "sgd_num", "period", "workers", "job_pairs"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        need(self.window <= 255, f"window must be at most 255, got {self.window}")
        need(
            self.max_vocab_size is None or self.max_vocab_size >= 2,
            f"max_vocab_size must be >= 2 (or None), got {self.max_vocab_size}",
        )
        check_choice("rho", self.rho, RHOS)
        check_choice("loss", self.loss, LOSSES)
        check_choice("optimizer", self.optimizer, ("sgd", "adagrad"))
        need(math.isfinite(self.reg) and self.reg >= 0, f"reg must be a finite number >= 0, got {self.reg}")
        if self.x_max != "auto":
            need(
                isinstance(self.x_max, (int, float)) and math.isfinite(self.x_max) and self.x_max > 0,
                f"x_max must be a finite number > 0 or 'auto', got {self.x_max!r}",
            )
        for name in ("alpha", "epsilon", "lr"):
            value = getattr(self, name)
            need(math.isfinite(value) and value > 0, f"{name} must be a finite number > 0, got {value}")
        need(math.isfinite(self.beta) and self.beta >= 0, f"beta must be a finite number >= 0, got {self.beta}")
        need(math.isfinite(self.t) and self.t > 0 and self.t != 1, f"t must be > 0 and not 1, got {self.t}")
        need(isinstance(self.seed, int) and 0 <= self.seed < 2**32, f"seed must be in [0, 2**32 - 1], got {self.seed}")
        if self.device != "cpu":
            raise GatelabError(f"WordRank trains with compiled CPU kernels; device must be 'cpu', got {self.device!r}")
        return self


# --- the objective, in numpy: the reference that the kernels are tested against --------------------
def loss_value(x: np.ndarray, loss: str) -> np.ndarray:
    """l(x): the hinge ``max(0, x + 1)`` or the logistic ``log2(1 + 2**x)``; both give l(0) = 1."""
    x = np.asarray(x, dtype=np.float64)
    return np.logaddexp2(0.0, x) if loss == "logistic" else np.maximum(x + 1.0, 0.0)


def loss_derivative(x: np.ndarray, loss: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 1.0 / (1.0 + np.exp2(-x)) if loss == "logistic" else (x > -1.0).astype(np.float64)


def corpus_x_max(n_words: int) -> float:
    """``x_max="auto"``: the authors' 100 on text8 (17M tokens), scaled down with the corpus, at most 100.

    Counts grow linearly with the corpus, so on a corpus of n tokens a pair as frequent per token as
    one at the cut-off on text8 has X = 100 * n / 17M: scaling x_max by the same factor gives every
    pair the weight r it would have in the authors' demo. With 100 on 1M tokens, nearly all pairs
    weigh r < 0.05 and the pairs with the few most frequent words dominate the objective.
    """
    return min(100.0, 100.0 * n_words / TEXT8_TOKENS)


def pair_weights(values: np.ndarray, x_max: float = 100.0, epsilon: float = 0.75) -> np.ndarray:
    """r = min(1, (X / x_max) ** epsilon), GloVe's weighting."""
    return np.minimum(1.0, (np.asarray(values, dtype=np.float64) / x_max) ** epsilon)


def rank_surrogates(U, V, rows, cols, loss: str) -> np.ndarray:
    """S_wc = sum over all contexts c' of l(s_wc' - s_wc), for each nonzero (dense, for small matrices)."""
    scores = U[rows] @ V.T
    own = scores[np.arange(len(rows)), cols]
    return loss_value(scores - own[:, None], loss).sum(axis=1)


def rho_value(S: np.ndarray, rho: str, alpha: float = 100.0, beta: float = 99.0, t: float = 1.5) -> np.ndarray:
    """The transformed rank rho(S) (see the module docstring)."""
    S = np.asarray(S, dtype=np.float64)
    if rho == "rho2":
        return 1.0 - _LN2 / np.log(S + 1.0)
    x = (S + beta) / alpha
    if rho == "rho1":
        return alpha * np.log2(x)
    return alpha * (x ** (1.0 - t) - 1.0) / (1.0 - t)


def bound(S, xi, rho: str, alpha: float = 100.0, beta: float = 99.0, t: float = 1.5) -> np.ndarray:
    """The linearised objective of one nonzero at auxiliary ``xi`` (the authors' bound for each rho).

    For rho1 and rho3 it is the tangent of rho at (S + beta) / alpha = 1 / xi, so it lies above
    rho and touches it at xi = alpha / (S + beta). For rho2 it is the authors' tangent plus their
    Gamma prior on xi, ``(beta * xi - beta / 2 * ln xi) / ln 2``.
    """
    S, xi = np.asarray(S, dtype=np.float64), np.asarray(xi, dtype=np.float64)
    if rho == "rho1":
        return -alpha * np.log2(xi) + (xi * (S + beta) - alpha) / _LN2
    if rho == "rho3":
        log_t = ((1.0 / xi) ** (1.0 - t) - 1.0) / (1.0 - t)
        return alpha * log_t + xi**t * (S + beta) - alpha * xi ** (t - 1.0)
    lx = np.log(xi)
    return 1.0 + _LN2 * (lx - 1.0 + xi * (S + 1.0)) / lx**2 + (beta * xi - 0.5 * beta * lx) / _LN2


def bound_slope(xi, rho: str, t: float = 1.5) -> np.ndarray:
    """g(xi) = d bound / d S: how much a nonzero's rank surrogate weighs between xi updates."""
    xi = np.asarray(xi, dtype=np.float64)
    if rho == "rho1":
        return xi / _LN2
    if rho == "rho3":
        return xi**t
    return _LN2 * xi / np.log(xi) ** 2


def xi_update(S, rho: str, alpha: float = 100.0, beta: float = 99.0) -> np.ndarray:
    """The closed-form xi: alpha / (S + beta) for rho1 and rho3, (beta/2 + 1) / (sqrt(S) + 1 + beta) for rho2."""
    S = np.asarray(S, dtype=np.float64)
    if rho == "rho2":
        return (0.5 * beta + 1.0) / (np.sqrt(S) + 1.0 + beta)
    return alpha / (S + beta)


def initial_xi(rho: str) -> float:
    """The authors' starting xi: 0.5 for rho2 (inside its domain (0, 1)), else 1."""
    return 0.5 if rho == "rho2" else 1.0


def linearised_objective(U, V, rows, cols, weights, xi, rho, loss, alpha=100.0, beta=99.0, t=1.5) -> float:
    """sum r_wc * bound(S_wc, xi_wc): what the SGD descends between xi updates."""
    S = rank_surrogates(U, V, rows, cols, loss)
    return float(np.sum(weights * bound(S, xi, rho, alpha, beta, t)))


def linearised_gradient(U, V, rows, cols, weights, xi, rho, loss, t=1.5) -> tuple[np.ndarray, np.ndarray]:
    """The gradient of :func:`linearised_objective` with respect to U and V (analytic)."""
    scores = U[rows] @ V.T
    own = scores[np.arange(len(rows)), cols]
    d = loss_derivative(scores - own[:, None], loss) * (weights * bound_slope(xi, rho, t))[:, None]  # (nnz, C)
    dU = np.zeros_like(U)
    dV = np.zeros_like(V)
    np.add.at(dU, rows, d @ V - d.sum(axis=1, keepdims=True) * V[cols])
    dV += d.T @ U[rows]
    np.add.at(dV, cols, -d.sum(axis=1, keepdims=True) * U[rows])
    return dU, dV


# --- training --------------------------------------------------------------------------------
@dataclass
class _Position:
    epoch: int = 0
    step: int = 0  # jobs done in this epoch (sub-epochs under torchrun)
    updates: int = 0
    seconds: float = 0.0


def _as_matrix(data, cfg: WordRankConfig, progress: bool) -> CooccurrenceMatrix:
    if isinstance(data, CooccurrenceMatrix):
        matrix = data
    elif isinstance(data, (str, os.PathLike)) and str(data).endswith(".npz"):
        matrix = CooccurrenceMatrix.load(data)
    else:
        if isinstance(data, (str, os.PathLike)):
            from gatelab.data.text import LineCorpus

            data = LineCorpus(data)
        matrix = count_cooccurrences(
            data, window=cfg.window, min_count=cfg.min_count, max_vocab_size=cfg.max_vocab_size, progress=progress
        )
    if len(matrix.vocab) < 2 or matrix.nnz == 0:
        raise GatelabError(
            f"the co-occurrence matrix has {len(matrix.vocab)} words and {matrix.nnz} nonzeros; WordRank needs at "
            "least 2 words that co-occur (a larger corpus, or a lower min_count)"
        )
    return matrix


def _check_block_count(n_words: int, parts: int) -> None:
    """Refuse a split of ``n_words`` words into ``parts`` blocks that cannot hold 2 words each."""
    if not 1 <= parts <= n_words // 2:
        raise GatelabError(
            f"cannot split {n_words} words into {parts} blocks of at least 2 words; run at most {n_words // 2} "
            "processes (a larger corpus or a lower min_count gives more words)"
        )


def block_bounds(counts: np.ndarray, parts: int) -> np.ndarray:
    """Boundaries ``0 = b_0 < ... < b_parts = len(counts)`` of contiguous blocks with about equal
    ``counts`` (nonzeros per word), each at least 2 long (a block's negatives exclude the positive)."""
    n = len(counts)
    _check_block_count(n, parts)
    cum = np.cumsum(counts, dtype=np.float64)
    b = np.empty(parts + 1, dtype=np.int64)
    b[0], b[parts] = 0, n
    b[1:parts] = np.searchsorted(cum, cum[-1] * np.arange(1, parts) / parts) + 1
    for i in range(1, parts):  # at least 2 words a block, from both ends
        b[i] = max(b[i], b[i - 1] + 2)
    for i in range(parts - 1, 0, -1):
        b[i] = min(b[i], b[i + 1] - 2)
    return b


def _keep_block(M: np.ndarray, lo: int, hi: int) -> None:
    """Every rank's rows ``[lo, hi)`` of ``M`` on every rank: the ranks' blocks are disjoint and cover ``M``."""
    buf = np.zeros_like(M)
    buf[lo:hi] = M[lo:hi]
    M[:] = distributed.all_reduce_(torch.from_numpy(buf)).numpy()


def _epoch_order(indptr: np.ndarray, rng: np.random.Generator | None, words: np.ndarray | None = None) -> np.ndarray:
    """The nonzeros word by word, the words in random order: a word's row stays in cache while
    its contexts are visited (the authors walk theirs context by context). With ``words``, those
    words' nonzeros in that order (``rng`` unused)."""
    perm = rng.permutation(len(indptr) - 1) if words is None else words
    lengths = indptr[perm + 1] - indptr[perm]
    starts = np.repeat(indptr[perm] - np.cumsum(lengths) + lengths, lengths)
    return starts + np.arange(int(lengths.sum()), dtype=np.int64)


def _fingerprint(matrix: CooccurrenceMatrix) -> dict:
    return {
        "vocab": matrix.vocab.fingerprint(),
        "nnz": int(matrix.nnz),
        "sum": float(matrix.values.sum()),
        "window": matrix.window,
        "min_count": matrix.min_count,
    }


class WordRank:
    """WordRank trainer (scikit-learn shape): ``WordRank(**params).fit(data)``.

    ``data``: a :class:`CooccurrenceMatrix`, the path of a saved one (``.npz``), a corpus file
    (one sentence a line) or any iterable of token lists (counted with ``window`` and ``min_count``).

    Fitted attributes: ``vocab``, ``word_vectors_`` (U), ``context_vectors_`` (V), ``wv`` (U, the
    :class:`KeyedVectors` the authors evaluate similarity on), ``xi_`` (per nonzero), ``history_`` (one
    dict an epoch), ``train_stats_``. Long runs: ``fit(checkpoint=...)`` saves the matrices, xi,
    the position (epoch and job), the RNG states and the config every ``checkpoint_every`` seconds and
    after the last epoch, and on SIGINT/SIGTERM saves and raises :class:`gatelab.checkpoint.Interrupted`;
    ``fit(resume=path)`` continues exactly (a finished run's checkpoint resumes with more ``epochs``).
    """

    def __init__(self, progress: bool = False, **params):
        unknown = set(params) - {f.name for f in dataclasses.fields(WordRankConfig)}
        if unknown:
            raise GatelabError(
                f"unknown WordRank parameter(s) {sorted(unknown)}; accepted: "
                f"{', '.join(f.name for f in dataclasses.fields(WordRankConfig))}"
            )
        self.config = WordRankConfig(**params).validate()
        self.progress = progress
        self.history_: list[dict] = []
        self.train_stats_: dict = {}

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.config)

    def _initial(self, matrix: CooccurrenceMatrix) -> tuple[np.ndarray, np.ndarray]:
        n, d = len(matrix.vocab), self.config.vector_size
        rng = np.random.default_rng([self.config.seed, 0x5752])
        U = rng.random((n, d), dtype=np.float32)
        V = rng.random((n, d), dtype=np.float32)
        for M in (U, V):
            M /= np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-6)
        return U, V

    def _load(self, path, matrix: CooccurrenceMatrix) -> dict:
        state = load_state(path, "WordRank checkpoint")
        check_resumable(state, FORMAT, self.config_dict(), path, may_differ=RESUMABLE_CHANGES)
        world = distributed.world_size()
        if state.get("processes", 1) != world:
            raise GatelabError(
                f"{path} was written by {state.get('processes')!r} process(es), this run has {world}; "
                "resume with the same number of processes"
            )
        try:
            if state["matrix"] != _fingerprint(matrix):
                raise GatelabError(
                    f"{path} was trained on another co-occurrence matrix; resume with the same corpus and settings"
                )
            n, d = len(matrix.vocab), self.config.vector_size
            shapes = {"U": (n, d), "V": (n, d), "xi": (matrix.nnz,)}
            if self.config.optimizer == "adagrad":
                shapes.update({key: (n, d) for key in SUMS})
            for key, shape in shapes.items():
                t = state[key]
                if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                    raise GatelabError(f"{path}: {key} is not a tensor of shape {shape}")
            position = _Position(**state["position"])
            if not all(isinstance(v, (int, float)) for v in dataclasses.asdict(position).values()):
                raise GatelabError(f"{path}: the position holds a value that is not a number")
            if not isinstance(state["history"], list):
                raise GatelabError(f"{path}: the history is not a list")
        except (KeyError, TypeError) as exc:
            raise GatelabError(f"{path} is not a complete WordRank checkpoint ({type(exc).__name__}: {exc})") from None
        return state

    def fit(
        self,
        data,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: float = 300.0,
        resume: str | os.PathLike | None = None,
        log_dir: str | os.PathLike | None = None,
    ) -> "WordRank":
        """Count co-occurrences if needed, then train the configured epochs (from the resumed position)."""
        import numba

        from gatelab.embeddings._wordrank_kernel import train_pass

        cfg = self.config
        world = distributed.world_size()
        if isinstance(data, CooccurrenceMatrix):
            matrix = _as_matrix(data, cfg, self.progress)
        else:  # rank 0 counts (or loads), the others receive the matrix
            matrix = distributed.on_main(lambda: _as_matrix(data, cfg, self.progress))
        if world > 1:
            _check_block_count(len(matrix.vocab), world)  # before any training
        self.matrix_, self.vocab = matrix, matrix.vocab
        rows, cols = matrix.rows, matrix.cols
        x_max = corpus_x_max(matrix.n_words) if cfg.x_max == "auto" else cfg.x_max
        weights = pair_weights(matrix.values, x_max, cfg.epsilon)
        adagrad = cfg.optimizer == "adagrad"
        if resume is not None:
            state = distributed.on_main(lambda: self._load(resume, matrix))
            U, V = state["U"].numpy().copy(), state["V"].numpy().copy()
            sums = tuple(state[key].numpy().copy() for key in SUMS) if adagrad else ()
            xi = state["xi"].numpy().astype(np.float64)
            pos = _Position(**state["position"])
            self.history_ = list(state["history"])
            set_rng_state(state["rng"])
        else:
            U, V = self._initial(matrix)
            sums = (np.zeros_like(U), np.zeros_like(V)) if adagrad else ()
            xi = np.full(matrix.nnz, initial_xi(cfg.rho))
            pos = _Position()
            self.history_ = []
        coef = (weights * bound_slope(xi, cfg.rho, cfg.t)).astype(np.float32)
        step_size = self._step_size(coef)
        nnz, indptr = matrix.nnz, matrix.indptr
        jobs_per_sweep = -(-nnz // cfg.job_pairs)
        steps = cfg.sgd_num * jobs_per_sweep

        def state() -> dict:
            return {
                "format": FORMAT,
                "config": self.config_dict(),
                "matrix": _fingerprint(matrix),
                "U": torch.from_numpy(U.copy()),
                "V": torch.from_numpy(V.copy()),
                **{key: torch.from_numpy(M.copy()) for key, M in zip(SUMS, sums)},
                "xi": torch.from_numpy(xi.astype(np.float64)),
                "position": dataclasses.asdict(pos),
                "history": list(self.history_),
                "rng": rng_state(),
                "processes": world,
            }

        quiet = not self.progress or not distributed.is_main()
        threads = numba.get_num_threads()
        numba.set_num_threads(min(cfg.workers, numba.config.NUMBA_NUM_THREADS))
        total = cfg.epochs * steps
        pbar = bar(total=total, desc="wordrank", unit="job", quiet=quiet)
        pbar.update(min(pos.epoch * steps + pos.step, total))
        resumed_from = pos.updates
        try:
            with (
                Checkpointer(checkpoint if distributed.is_main() else None, checkpoint_every) as ckpt,
                ScalarLog(log_dir if distributed.is_main() else None) as log,
            ):
                if world > 1:
                    self._train_blocks(
                        matrix, (U, V, *sums), xi, weights, coef, pos, (ckpt, checkpoint), log, pbar, state
                    )
                else:
                    while pos.epoch < cfg.epochs:
                        epoch = pos.epoch
                        order = _epoch_order(indptr, np.random.default_rng([cfg.seed, epoch]))
                        t0, done0 = time.monotonic(), pos.updates
                        clock = t0
                        while pos.step < steps:
                            j = pos.step % jobs_per_sweep
                            part = order[j * cfg.job_pairs : (j + 1) * cfg.job_pairs]
                            seeds = np.random.SeedSequence([cfg.seed, epoch, pos.step]).generate_state(
                                cfg.workers, np.uint64
                            )
                            train_pass(
                                part,
                                rows,
                                cols,
                                coef,
                                U,
                                V,
                                *(sums or (None, None)),
                                step_size,
                                np.float32(cfg.reg),
                                cfg.loss == "logistic",
                                seeds,
                            )
                            pos.step += 1
                            pos.updates += len(part)
                            now = time.monotonic()
                            pos.seconds += now - clock
                            clock = now
                            pbar.update(1)
                            if pos.step < steps:
                                ckpt.step(state)
                        seconds = time.monotonic() - t0
                        row = {"epoch": epoch + 1, "updates": pos.updates - done0, "seconds": seconds}
                        row["pairs_per_sec"] = row["updates"] / max(seconds, 1e-9)
                        if (epoch + 1) % cfg.period == 0 and epoch + 1 < cfg.epochs:
                            step_size = self._update_xi(self.rank_sums(U, V), xi, weights, coef, row)
                        pos.epoch, pos.step = epoch + 1, 0
                        self._end_epoch(row, pos, log, quiet)
                        if pos.epoch < cfg.epochs:  # epochs take seconds: save on the clock, not at every one
                            ckpt.step(state)
                        else:
                            ckpt.epoch_end(state)
        finally:
            numba.set_num_threads(threads)
            pbar.close()
        self.xi_ = xi
        words, counts = self.vocab.words, self.vocab.counts
        self.word_vectors_ = KeyedVectors(words, U, counts)
        self.context_vectors_ = KeyedVectors(words, V, counts)
        self.sum_vectors_ = KeyedVectors(words, U + V, counts)
        self.wv = self.word_vectors_
        self.train_stats_ = {
            "updates": pos.updates,
            "resumed_from_updates": resumed_from,
            "seconds": pos.seconds,
            "pairs_per_sec": pos.updates / max(pos.seconds, 1e-9),
            "nnz": nnz,
            "vocab_size": len(self.vocab),
            "threads": cfg.workers,
            "processes": world,
            "x_max": x_max,
        }
        return self

    def _update_xi(self, S: np.ndarray, xi: np.ndarray, weights, coef: np.ndarray, row: dict) -> np.float32:
        """xi in closed form from the rank sums ``S``, the pairs' coefficients after it (in place), the
        objective in ``row``; returns the new step size."""
        cfg = self.config
        xi[:] = xi_update(S, cfg.rho, cfg.alpha, cfg.beta)
        coef[:] = weights * bound_slope(xi, cfg.rho, cfg.t)
        row["objective"] = float(np.sum(weights * rho_value(S, cfg.rho, cfg.alpha, cfg.beta, cfg.t)))
        row["mean_rank"] = float(np.average(S, weights=weights)) - 1.0
        row["mean_xi"] = float(xi.mean())
        return self._step_size(coef)

    def _end_epoch(self, row: dict, pos: "_Position", log: ScalarLog, quiet: bool) -> None:
        """Record a finished epoch: history, one line, TensorBoard."""
        self.history_.append(row)
        extra = ""
        if "objective" in row:
            extra = f", objective {row['objective']:.4g}, weighted mean rank {row['mean_rank']:.1f}"
        say(
            f"wordrank epoch {pos.epoch}/{self.config.epochs}: {row['updates']} updates, "
            f"{row['pairs_per_sec'] / 1e6:.2f}M pairs/s{extra}",
            quiet=quiet,
        )
        log.add(pos.epoch, pairs_per_sec=row["pairs_per_sec"], objective=row.get("objective"))

    def _train_blocks(self, matrix, arrays, xi, weights, coef, pos, saving, log, pbar, state) -> None:
        """The remaining epochs under the block schedule (several processes; see the module docstring).

        ``pos.step`` counts the sub-epochs done in the current epoch. Each sub-epoch ends with one
        all-reduce of the context block just trained (and AdaGrad's sums for it) and one of the
        stop/save flags and the update count, so all ranks decide together to save or stop; U (and HU)
        are gathered into every rank's copy before rank 0 writes a checkpoint. ``saving``: the
        Checkpointer (with a path on rank 0 only) and the checkpoint's path, which every rank names on a stop.

        Blocks are contiguous in a relabelling that deals the frequency-sorted words out in turn (new id j
        holds word ``perm[j]``: words 0, p, 2p, ..., then 1, p + 1, ...), so that each block mixes frequent
        and rare words. With blocks cut from the frequency order instead, a pair only ever met negatives
        of its own frequency band: on 1M tokens of Brown + PTB, SimLex-999 fell from 0.164 (one process)
        to 0.111, against 0.154 dealt out. Training runs on relabelled copies of the matrices, written
        back into ``arrays`` (U, V and, under AdaGrad, HU, HV; in vocabulary order) for checkpoints, xi
        updates and the end.
        """
        from gatelab.embeddings._wordrank_kernel import train_pass

        cfg = self.config
        U, V = arrays[:2]
        ckpt, path = saving
        r, p = distributed.rank(), distributed.world_size()
        n, indptr = len(matrix.vocab), matrix.indptr
        perm = np.concatenate([np.arange(k, n, p) for k in range(p)])
        new_id = np.empty(n, dtype=np.int64)
        new_id[perm] = np.arange(n)
        rows, cols = new_id[matrix.rows].astype(matrix.rows.dtype), new_id[matrix.cols].astype(matrix.cols.dtype)
        row_b = block_bounds(np.diff(indptr)[perm], p)
        col_b = block_bounds(np.bincount(matrix.cols, minlength=n)[perm], p)
        r0, r1 = int(row_b[r]), int(row_b[r + 1])
        # my words' nonzeros, word by word in relabelled order (each word's run of the CSR arrays)
        mine = _epoch_order(indptr, None, words=perm[r0:r1])
        col_block = np.searchsorted(col_b, cols[mine], side="right") - 1
        parts = [mine[col_block == b] for b in range(p)]  # my nonzeros, by context block
        # each part's word boundaries, for _epoch_order's word-by-word shuffle
        part_ptr = [np.concatenate([[0], np.cumsum(np.bincount(rows[ids] - r0, minlength=r1 - r0))]) for ids in parts]
        trained = [M[perm] for M in arrays]  # the relabelled copies
        Up, Vp, *sums = trained
        word_rows, context_rows = [Up, *sums[:1]], [Vp, *sums[1:]]  # U (and HU), V (and HV)
        step_size = self._step_size(coef)
        part_jobs = [-(-len(part) // cfg.job_pairs) * cfg.sgd_num for part in parts]
        jobs = sum(part_jobs)
        pbar.reset(total=cfg.epochs * jobs)
        pbar.update(pos.epoch * jobs + sum(part_jobs[(r + s) % p] for s in range(pos.step)))  # sub-epochs done
        clock = time.monotonic()

        def publish() -> None:
            """Gather U (and HU) and write the relabelled copies back into vocabulary order."""
            for M in word_rows:
                _keep_block(M, r0, r1)
            for M, Mp in zip(arrays, trained):
                M[perm] = Mp

        def save(stop: bool) -> None:
            publish()
            ckpt.save(state)  # rank 0 writes; the others wait, so the file exists when any of them goes on
            distributed.barrier()
            if stop:
                raise Interrupted(ckpt.signum or signal.SIGINT, Path(path) if path is not None else None)

        while pos.epoch < cfg.epochs:
            epoch, t0, done0 = pos.epoch, time.monotonic(), pos.updates
            while pos.step < p:
                b = (r + pos.step) % p
                lo, hi = int(col_b[b]), int(col_b[b + 1])
                # the block's nonzeros word by word, the words in random order (as one process)
                order = parts[b][_epoch_order(part_ptr[b], np.random.default_rng([cfg.seed, epoch, pos.step, r]))]
                for sweep in range(cfg.sgd_num):
                    for j in range(0, len(order), cfg.job_pairs):
                        seeds = np.random.SeedSequence([cfg.seed, epoch, pos.step, r, sweep, j]).generate_state(
                            cfg.workers, np.uint64
                        )
                        train_pass(
                            order[j : j + cfg.job_pairs],
                            rows,
                            cols,
                            coef,
                            Up,
                            Vp,
                            *(sums or (None, None)),
                            step_size,
                            np.float32(cfg.reg),
                            cfg.loss == "logistic",
                            seeds,
                            lo,
                            hi,
                        )
                        pbar.update(1)
                for M in context_rows:
                    _keep_block(M, lo, hi)  # the context blocks move on: every rank gets every trained block
                flags = torch.tensor([int(ckpt.stop_requested), int(ckpt.save_due), len(order) * cfg.sgd_num])
                distributed.all_reduce_(flags)
                pos.step += 1
                pos.updates += int(flags[2])
                now = time.monotonic()
                pos.seconds += now - clock
                clock = now
                if (flags[0] or flags[1]) and pos.step < p:
                    save(stop=bool(flags[0]))
            seconds = time.monotonic() - t0
            row = {"epoch": epoch + 1, "updates": pos.updates - done0, "seconds": seconds}
            row["pairs_per_sec"] = row["updates"] / max(seconds, 1e-9)
            if (epoch + 1) % cfg.period == 0 and epoch + 1 < cfg.epochs:
                publish()  # the rank sums need all of U and V; each rank sums a share of the words
                S = torch.from_numpy(self.rank_sums(U, V, rows=distributed.shard_bounds(n)))
                step_size = self._update_xi(distributed.all_reduce_(S).numpy(), xi, weights, coef, row)
            pos.epoch, pos.step = epoch + 1, 0
            self._end_epoch(row, pos, log, not self.progress or r != 0)
            if pos.epoch == cfg.epochs or flags[0] or flags[1]:  # the last epoch always saves (U gathered)
                save(stop=bool(flags[0]))

    def _step_size(self, coef: np.ndarray) -> np.float32:
        """The multiplier of each pair's ``coef = r * g(xi)``: AdaGrad's ``lr``, or plain SGD's
        ``lr * nnz * g(xi0) / sum(coef)``. At the start xi = xi0 everywhere, and this is the authors'
        ``lr * nnz / sum(r)``; after an xi update the mean step stays where it started (see
        :class:`WordRankConfig`)."""
        cfg = self.config
        if cfg.optimizer == "adagrad":
            return np.float32(cfg.lr)
        g0 = float(bound_slope(initial_xi(cfg.rho), cfg.rho, cfg.t))
        return np.float32(cfg.lr * len(coef) * g0 / np.sum(coef, dtype=np.float64))

    def rank_sums(self, U: np.ndarray, V: np.ndarray, block: int = 512, rows: tuple[int, int] | None = None):
        """S_wc for every nonzero (of the words ``rows = (start, stop)`` only, 0 elsewhere), exactly
        (score blocks by BLAS, sums compiled)."""
        from gatelab.embeddings._wordrank_kernel import rank_sums

        matrix = self.matrix_
        indptr = matrix.indptr
        out = np.zeros(matrix.nnz, dtype=np.float64)
        start, stop = (0, len(matrix.vocab)) if rows is None else rows
        for r0 in range(start, stop, block):
            scores = U[r0 : min(r0 + block, stop)] @ V.T
            rank_sums(scores, r0, indptr, matrix.cols, self.config.loss == "logistic", out)
        return out

    def vectors(self, kind: str = "word") -> KeyedVectors:
        """The trained vectors: ``word`` (U, the default and ``wv``), ``context`` (V) or ``sum`` (U + V)."""
        check_choice("vector kind", kind, ("word", "context", "sum"))
        if not hasattr(self, "wv"):
            raise GatelabError("fit the model before asking for its vectors")
        return {"sum": self.sum_vectors_, "word": self.word_vectors_, "context": self.context_vectors_}[kind]


def work_dir(out: str | os.PathLike) -> Path:
    """The folder beside ``out`` that holds an unfinished run's co-occurrence matrix and checkpoint."""
    out = Path(out)
    return out.with_name(out.name + ".wordrank-work")


def train_wordrank(
    sentences: Iterable[Iterable[str]] | str | os.PathLike | CooccurrenceMatrix,
    out: str | os.PathLike | None = None,
    binary: bool = True,
    sum_out: str | os.PathLike | None = None,
    context_out: str | os.PathLike | None = None,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 300.0,
    resume: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
    metadata: dict | None = None,
    **params,
) -> WordRank:
    """Train WordRank and (if ``out``) save the word vectors U in word2vec format, with a config JSON.

    ``sum_out``/``context_out`` also save U + V and V. With ``out``, the co-occurrence matrix and the
    checkpoint live in :func:`work_dir` while training, so an interrupted or killed run resumes
    without counting again; a finished run removes them. Under torchrun rank 0 counts and writes the files.
    """
    model = WordRank(progress=progress, **params)
    paths = [Path(p) for p in (out, sum_out, context_out) if p is not None]
    for p in paths:
        check_output_path(p)
    work = None
    data = sentences
    if out is not None:
        work = work_dir(out)
        check_output_path(work, kind="dir")
        if checkpoint is None:
            checkpoint = work / "checkpoint.pt"
        cached = work / "cooccurrence.npz"
        if not isinstance(sentences, CooccurrenceMatrix) and not str(sentences).endswith(".npz"):

            def counted() -> CooccurrenceMatrix:
                if resume is not None and cached.is_file():
                    return CooccurrenceMatrix.load(cached)
                matrix = _as_matrix(sentences, model.config, progress)
                work.mkdir(parents=True, exist_ok=True)
                matrix.save(cached)
                return matrix

            data = distributed.on_main(counted)  # under torchrun rank 0 counts, the others receive the matrix
    try:
        model.fit(data, checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume, log_dir=log_dir)
    except BaseException:
        if work is not None and distributed.is_main() and not Path(checkpoint).exists():
            shutil.rmtree(work, ignore_errors=True)  # nothing to resume from
        raise
    if out is not None and distributed.is_main():
        model.wv.save_word2vec_format(out, binary=binary)
        for path, kind in ((sum_out, "sum"), (context_out, "context")):
            if path is not None:
                model.vectors(kind).save_word2vec_format(path, binary=binary)
        info = {
            "config": model.config_dict(),
            "train": model.train_stats_,
            "history": model.history_,
            "vocab_size": len(model.vocab),
            "nnz": model.matrix_.nnz,
            "corpus": repr(sentences),
            "vectors": "word (U)",
        }
        write_json(Path(out).with_name(Path(out).name + ".json"), {**info, **(metadata or {})})
        shutil.rmtree(work, ignore_errors=True)
    return model
