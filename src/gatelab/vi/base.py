"""The fitting loops shared by every mixture model: batch VI, SVI, bulk-synchronous VI and ESVI.

A mixture model with conjugate priors is summarised by the sufficient
statistics of its components, a ``(K, S)`` tensor ``T``: LDA's topic–word
counts, a Gaussian component's ``[N_k, Σ r x, Σ r x²]``. Each data shard ``p``
contributes ``S_p`` (its expected statistics under its local variational
parameters) and the global variational parameters are the prior plus
``T = Σ_p S_p``. The models (``LDAVI``, ``GaussianMixtureVI``) supply the local
step; this module supplies the four ways of driving it:

* ``batch``: full coordinate ascent, ``T ← S`` over all the data each iteration.
* ``svi``: Hoffman et al.'s stochastic natural gradient on minibatches,
  ``T ← (1 − ρ_t) T + ρ_t (N / |B|) S_B`` with ``ρ_t = (τ + t)^(−κ)``.
* ``bsp``: bulk-synchronous distributed batch VI, ``T ← all_reduce(S_p)`` each iteration.
* ``esvi``: Extreme SVI (Zhang et al., AISTATS 2019). Data and components are
  both partitioned. The K components are cut into B blocks that circulate
  around the ranks as tokens (``isend``/``irecv``); the rank holding block b
  updates its own shard's local parameters for the components of b, then the
  block's global statistics, then passes the block on. No barrier and no lock:
  a block is held by exactly one rank at a time, so its owner may write it.

ESVI's global update. Each rank p keeps ``S_{p,b}``, the statistics its shard
last contributed to block b. When b arrives at p carrying ``T_b``, p computes
its shard's new statistics ``S'_{p,b}`` and applies

    T_b ← T_b − S_{p,b} + S'_{p,b},      S_{p,b} ← S'_{p,b}            (1)

so the invariant ``T_b = Σ_q S_{q,b}`` holds after every visit: each shard's
statistics are counted exactly once, with weight 1, whatever order and timing
the visits have (the incremental view of Neal and Hinton that ESVI builds on).
SVI, seeing one minibatch, must rescale it by ``N / |B|`` and damp it with
ρ_t; ESVI needs neither, because (1) replaces a shard's old contribution
instead of adding a rescaled guess of the whole. The start keeps the invariant
too: every shard's first statistics ``S⁰_p`` come from one local pass under a
shared random initial state, and ``T⁰ = all_reduce(S⁰_p)``. The local responsibilities
are normalised over all K components with the per-block log-normalisers
``log z_{i,b} = logsumexp_{k∈b} ℓ_{ik}``, which each rank keeps for its points:

    φ_{ik} = exp(ℓ_{ik} − logsumexp_b log z_{i,b}),   k in the block held,   (2)

with the other blocks' ``z_{i,b}`` as they were at their last visit.

The stochastic form (``esvi_update="stochastic"``). Equation (1) converges to the batch fixed point,
which for LDA on KOS overfits. The stochastic form replaces it by SVI's step on the block held, once per
minibatch of the shard (equation (3), ``MixtureVI._visit_stochastic``): each block is then an SVI
iterate that only the rank holding it updates, so the token passing, the lock-freedom and the local
step with the normalisers (2) are unchanged; only the global update differs, and the shard statistics
``S_{p,b}`` are not used after the start. The start is (1)'s, not SVI's random λ⁰ (a warm start):

    T⁰_b = Σ_p S⁰_{p,b},      t_b = 0,                                                      (4)

the statistics of the start's exact local pass over all the data (LDA: γ to its fixed point under a
random λ⁰; Gaussian mixtures: the k-means++ assignment). The steps (3) then refine a fit of the whole
data instead of washing out a random one; with the delay of ``ESVI_SCHEDULE`` the first step keeps
1 − ρ_0 = 1 − 64^(−0.6) ≈ 92% of T⁰. On KOS this start with that schedule reached a lower validation
perplexity than (1) and than the random start (README, section on ``gatelab.vi``).

Rounds. In round r every block visits every rank once, along the ring
p → p + 1. A rank begins its round-r visits only when its own ("home") blocks
have come back from round r − 1; at that moment its shard state and its home
blocks form a consistent cut (every block's ``T_b`` equals the sum of the
shards' statistics at their round-(r − 1) ends), which is when it checkpoints,
into its own file. This is a local wait for the rank's own tokens, not a
global barrier: ranks run up to one round apart.
"""

from __future__ import annotations

import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gatelab import distributed
from gatelab.checkpoint import Checkpointer, check_resumable, load_state, rng_state, save_state, set_rng_state
from gatelab.devices import resolve_device
from gatelab.errors import GatelabError, check_choice
from gatelab.progress import ScalarLog, say

ALGORITHMS = ("batch", "svi", "bsp", "esvi")
ESVI_UPDATES = ("incremental", "stochastic")


def _typed(mapping: dict, key: str, kind: type, path) -> Any:
    """``mapping[key]`` if it is a ``kind``, else a GatelabError naming the file and the entry."""
    value = mapping.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise GatelabError(f"{path}: the saved entry {key!r} is {value!r}, not a {kind.__name__}")
    return value


def dirichlet_expectation(a: torch.Tensor) -> torch.Tensor:
    """E[log x] under Dirichlet(a) along the last axis: ψ(a) − ψ(Σ a)."""
    return torch.digamma(a) - torch.digamma(a.sum(-1, keepdim=True))


def learning_rate(step: int, tau: float, kappa: float) -> float:
    """Robbins–Monro step size ρ_t = (τ + t)^(−κ) of SVI."""
    return (tau + step) ** (-kappa)


# (τ, κ) of ρ_t when the estimator is given none: SVI's, and ESVI's stochastic form's own. The latter was
# chosen on KOS's validation split (LDA, 2 blocks, K = 20 with 4 passes and K = 50 with 10, 5 seeds each; the
# lowest mean perplexity relative to the incremental update over both, -2.0% and -1.0%; README, section on
# gatelab.vi): started from the data (equation (4)), the blocks want a longer delay τ than SVI's random start
SVI_SCHEDULE = (10.0, 0.7)
ESVI_SCHEDULE = (64.0, 0.6)


class MixtureVI:
    """Base of the mixture estimators: hyperparameters, the four fitting loops, checkpoints and history."""

    _format = "gatelab-vi"
    _metric = "score"  # the name of the held-out number in the history
    _lower_is_better = False  # whether a lower held-out number is better (perplexity) or a higher one

    def __init__(
        self,
        n_components: int,
        *,
        algorithm: str = "batch",
        max_iter: int = 20,
        local_iter: int = 10,
        batch_size: int = 256,
        tau: float | None = None,
        kappa: float | None = None,
        n_blocks: int | None = None,
        topk: int | float | None = None,
        esvi_update: str = "incremental",
        seed: int = 0,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        eval_every: int = 1,
        quiet: bool = True,
    ):
        self.n_components, self.algorithm = n_components, algorithm
        self.max_iter, self.local_iter = max_iter, local_iter
        self.batch_size, self.tau, self.kappa, self.n_blocks, self.topk = batch_size, tau, kappa, n_blocks, topk
        self.esvi_update = esvi_update
        self.seed, self.device, self.dtype, self.eval_every, self.quiet = seed, device, dtype, eval_every, quiet

    # ------------------------------------------------------------------ checks and configuration
    def _check_params(self, n_total: int) -> None:
        check_choice("algorithm", self.algorithm, ALGORITHMS)
        check_choice("esvi_update", self.esvi_update, ESVI_UPDATES)
        for name in ("n_components", "max_iter", "local_iter", "batch_size", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GatelabError(f"{name} must be an integer >= 1, got {value!r}")
        if self.n_components > n_total:
            raise GatelabError(
                f"n_components {self.n_components} is larger than the {n_total} data points; use 1..{n_total}"
            )
        tau, kappa = self._schedule()
        if not (math.isfinite(tau) and tau >= 0 and math.isfinite(kappa) and 0.5 < kappa <= 1):
            raise GatelabError(f"tau must be >= 0 and kappa in (0.5, 1], got tau={tau}, kappa={kappa}")
        world = distributed.world_size()
        if self.algorithm in ("batch", "svi") and world > 1:
            raise GatelabError(f"algorithm {self.algorithm!r} runs in one process; under torchrun use bsp or esvi")
        blocks = self._n_blocks()
        if not 1 <= blocks <= self.n_components:
            raise GatelabError(f"n_blocks must lie in [1, n_components={self.n_components}], got {blocks}")
        if self.algorithm == "esvi" and world > blocks:
            raise GatelabError(
                f"world size {world} is larger than the {blocks} component blocks: every rank must hold a block; "
                f"use at most {blocks} processes or more blocks (n_blocks <= n_components={self.n_components})"
            )
        self._topk_count()

    def _schedule(self) -> tuple[float, float]:
        """(τ, κ) of the step sizes ρ_t: those given, else the algorithm's own (``SVI_SCHEDULE``, ``ESVI_SCHEDULE``)."""
        tau, kappa = ESVI_SCHEDULE if self.algorithm == "esvi" else SVI_SCHEDULE
        return (tau if self.tau is None else self.tau), (kappa if self.kappa is None else self.kappa)

    def _n_blocks(self) -> int:
        if self.n_blocks is not None:
            return self.n_blocks
        return min(self.n_components, 2 * distributed.world_size()) if self.algorithm == "esvi" else 1

    def _topk_count(self) -> int | None:
        """How many components each data point keeps (``topk`` a count, or a fraction of K), or None for all."""
        k = self.topk
        if k is None:
            return None
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k <= 0:
            raise GatelabError(f"topk must be a count in [1, K] or a fraction in (0, 1], got {k!r}")
        count = math.ceil(k * self.n_components) if isinstance(k, float) and k <= 1 else int(k)
        if not 1 <= count <= self.n_components:
            raise GatelabError(f"topk {k!r} keeps {count} components; it must keep 1..{self.n_components}")
        return None if count == self.n_components else count

    def _config(self, n_total: int) -> dict:
        tau, kappa = self._schedule()
        return {
            "model": type(self).__name__,
            "n_components": self.n_components,
            "algorithm": self.algorithm,
            "max_iter": self.max_iter,
            "local_iter": self.local_iter,
            "batch_size": self.batch_size,
            "tau": tau,
            "kappa": kappa,
            "n_blocks": self._n_blocks(),
            "topk": self.topk,
            "esvi_update": self.esvi_update,
            "seed": self.seed,
            "n_total": n_total,
            "world_size": distributed.world_size(),
            **self._model_config(),
        }

    # ------------------------------------------------------------------ hooks for the models
    def _prepare(self, X, train: bool = False) -> Any:
        """Validated data on the device (``train``: the training data, which fixes the data's shape)."""
        raise NotImplementedError

    def _n_items(self, data) -> int:
        raise NotImplementedError

    def _model_config(self) -> dict:
        return {}

    def _init(self, data, n_total: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``(T, S_p, local state)`` at the start; ``T`` equal on every rank."""
        raise NotImplementedError

    def _estep(self, data, T: torch.Tensor, state: dict, rows: torch.Tensor | None = None) -> torch.Tensor:
        """This shard's (or its ``rows``') statistics after updating its local parameters under ``T``."""
        raise NotImplementedError

    def _visit(self, data, T_block: torch.Tensor, block: int, state: dict) -> torch.Tensor:
        """ESVI: update the local parameters for the components of ``block``; return the shard's new statistics."""
        raise NotImplementedError

    def _local_bound(self, data, T: torch.Tensor, state: dict) -> torch.Tensor:
        """The data-dependent part of the ELBO on this shard (local parameters as in ``state``)."""
        raise NotImplementedError

    def _global_bound(self, T: torch.Tensor) -> torch.Tensor:
        """The prior part of the ELBO: −KL(q(global) || p(global))."""
        raise NotImplementedError

    def _set_params(self, T: torch.Tensor) -> None:
        raise NotImplementedError

    def _evaluate(self, T: torch.Tensor, held) -> float:
        """The held-out number (perplexity or log-likelihood) of the model with statistics ``T``."""
        raise NotImplementedError

    def _prepare_heldout(self, X) -> Any:
        return self._prepare(X)

    def _extra(self) -> dict:
        """What the model needs beyond its statistics to be rebuilt (data shape, data-derived priors)."""
        return {"n_total": self._n_total}

    def _set_extra(self, extra: dict, path) -> None:
        self._n_total = _typed(extra, "n_total", int, path)

    # ------------------------------------------------------------------ saving
    _PARAMS = (
        "n_components",
        "algorithm",
        "max_iter",
        "local_iter",
        "batch_size",
        "tau",
        "kappa",
        "n_blocks",
        "topk",
        "esvi_update",
        "seed",
        "eval_every",
    )

    def get_params(self) -> dict:
        """The constructor's settings (scikit-learn style); ``device``, ``dtype`` and ``quiet`` are left out."""
        names = self._PARAMS + self._MODEL_PARAMS
        return {name: getattr(self, name) for name in names}

    _MODEL_PARAMS: tuple = ()

    def save(self, path: str | Path) -> Path:
        """Write the fitted model (settings, statistics, history) atomically; read it back with ``load``."""
        self._check_fitted()
        return save_state(
            path,
            {
                "format": self._format + "-model",
                "params": self.get_params(),
                "T": self._T.cpu(),
                "extra": self._extra(),
                "history": self.history_,
                "elbo": self.elbo_,
            },
        )

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "MixtureVI":
        """A model written by ``save``; a damaged or foreign file gives a GatelabError naming it."""
        state = load_state(path, "model")
        fmt = cls._format + "-model"
        if state.get("format") != fmt:
            raise GatelabError(f"{path} holds a {state.get('format')!r}, not a {fmt!r}")
        params = state.get("params")
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise GatelabError(f"{path}: the saved settings are damaged (not a dictionary of named settings)")
        try:
            model = cls(
                **params, device=device, dtype=torch.float64 if state["T"].dtype == torch.float64 else torch.float32
            )
        except TypeError as exc:
            raise GatelabError(f"{path}: the saved settings are not this model's ({exc})") from None
        T = state.get("T")
        if not isinstance(model.n_components, int) or isinstance(model.n_components, bool):
            raise GatelabError(f"{path}: the saved number of components is {model.n_components!r}, not an integer")
        if not torch.is_tensor(T) or T.dim() != 2 or T.shape[0] != model.n_components or not T.is_floating_point():
            raise GatelabError(f"{path}: the statistics are not a ({model.n_components}, ·) float tensor")
        extra = state.get("extra")
        if not isinstance(extra, dict):
            raise GatelabError(f"{path}: the entry 'extra' is missing or damaged")
        model._device = resolve_device(device)
        model._set_extra(extra, path)
        model._check_params(model._n_total)
        model._T = T.to(model._device)
        model._set_params(model._T)
        model.history_ = state.get("history") if isinstance(state.get("history"), list) else []
        model.elbo_ = float(state["elbo"]) if isinstance(state.get("elbo"), float) else float("nan")
        return model

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X,
        X_val=None,
        *,
        checkpoint: str | Path | None = None,
        resume: str | Path | None = None,
        checkpoint_every: float = 300.0,
        log_dir: str | None = None,
    ) -> "MixtureVI":
        """Fit to ``X`` (under torchrun: this rank's shard). ``X_val``, if given, is scored along the way into
        ``history_`` (a validation set carved from the training data: never the test set), and the fitted
        parameters are those of the scored iteration that did best on it (``best_iteration_``; LDA's held-out
        perplexity drifts up late in a fit while the ELBO still rises); without it, the last iteration's."""
        self._device = resolve_device(self.device)
        data = self._prepare(X, train=True)
        n_local = self._n_items(data)
        counts = torch.zeros(distributed.world_size(), dtype=torch.float64)
        counts[distributed.rank()] = n_local
        counts = distributed.all_reduce_(counts)
        n_total = int(counts.sum())
        self._offset = int(counts[: distributed.rank()].sum())  # this shard's first item in the whole data
        self._check_params(n_total)
        self._blocks = [b.to(self._device) for b in torch.arange(self.n_components).chunk(self._n_blocks())]
        self._n_total, self._n_local = n_total, n_local
        held = self._prepare_heldout(X_val) if X_val is not None else None
        config = self._config(n_total)
        generator = torch.Generator().manual_seed(self.seed)
        clock = time.perf_counter()
        T, S, state = self._init(data, n_total, generator)
        if self.algorithm == "esvi" and self.esvi_update == "stochastic":  # each rank's visiting orders
            order_seed = self.seed * 1000003 + 7919 + distributed.rank()
            state["order_generator"] = torch.Generator().manual_seed(order_seed).get_state()
        # the start (a first local pass, k-means++) counts as training time, as the peers' does
        run = {"iteration": 0, "elapsed": time.perf_counter() - clock, "history": [], "step": 0}
        ckpt_path = self._rank_path(checkpoint) if checkpoint is not None else None
        if resume is not None:
            saved = self._load(resume, config)
            T, S, state, run = saved["T"], saved["S"], saved["local"], saved["run"]
            set_rng_state(saved["rng"])
            generator.set_state(saved["generator"])
        self.config_ = config
        with Checkpointer(ckpt_path, every=checkpoint_every) as ckpt, ScalarLog(log_dir) as log:
            loop = self._fit_esvi if self.algorithm == "esvi" else self._fit_sync
            T = loop(data, T, S, state, run, config, generator, held, ckpt, log)
        best = run.pop("best", None)
        self.history_ = run["history"]
        self.n_iter_ = run["iteration"]
        self.fit_seconds_ = run["elapsed"]
        self.best_iteration_ = run["iteration"] if best is None else best["iteration"]
        chosen = next((h for h in self.history_ if h["iteration"] == self.best_iteration_), {})
        if best is not None:
            T = best["T"].to(self._device)
        self._set_params(T)
        self._T = T
        self.elbo_ = chosen["elbo"] if "elbo" in chosen else float(self._elbo(data, T, state))
        return self

    def _keep_best(self, run, T) -> None:
        """Remember ``T`` if the history's last entry is the best held-out number so far."""
        entry = run["history"][-1]
        if self._metric not in entry:
            return
        value, best = entry[self._metric], run.get("best")
        if best is None or (value < best["value"] if self._lower_is_better else value > best["value"]):
            run["best"] = {"iteration": entry["iteration"], "value": value, "T": T.clone()}

    def _elbo(self, data, T, state) -> torch.Tensor:
        """The ELBO of the whole training set (all ranks) at statistics ``T``; refreshes local parameters first
        where the algorithm keeps none for every point (SVI)."""
        self._ensure_local(data, T, state)
        local = distributed.all_reduce_(self._local_bound(data, T, state).double().reshape(1))[0]
        return local + self._global_bound(T).double()

    def _ensure_local(self, data, T, state) -> None:
        """Give every point local parameters under ``T`` if the algorithm kept none (SVI); a no-op by default."""

    def _rank_path(self, path) -> Path:
        path = Path(path)
        return path.with_name(f"{path.name}.rank{distributed.rank()}") if distributed.is_distributed() else path

    def _state(self, T, S, state, run, config, generator, previous=None) -> dict:
        saved = {
            "format": self._format,
            "config": config,
            "T": T.clone(),
            "S": S.clone(),
            "local": {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()},
            "run": {**run, "history": [dict(h) for h in run["history"]]},
            "rng": rng_state(),
            "generator": generator.get_state(),
        }
        if previous is not None:
            saved["previous"] = {k: v for k, v in previous.items() if k != "previous"}
        return saved

    def _load(self, resume, config) -> dict:
        """This rank's checkpoint, at the last iteration (or round) that every rank saved."""
        path = self._rank_path(resume)
        saved = load_state(path, "variational-inference checkpoint")
        check_resumable(saved, self._format, config, path, may_differ=("max_iter",))
        common = torch.tensor([float(saved["run"]["iteration"])], dtype=torch.float64)
        if distributed.is_distributed():  # ranks may have saved up to one round apart: take the last common one
            dist.all_reduce(common, op=dist.ReduceOp.MIN)
        if int(common[0]) != saved["run"]["iteration"]:
            saved = saved.get("previous")
            if saved is None or saved["run"]["iteration"] != int(common[0]):
                raise GatelabError(f"{path} holds no state of iteration {int(common[0])}, which every rank saved")
        try:
            for key in ("T", "S"):
                if not torch.is_tensor(saved[key]) or saved[key].shape[0] != self.n_components:
                    raise GatelabError(f"{path}: entry {key!r} is not a ({self.n_components}, ·) tensor")
        except KeyError as exc:
            raise GatelabError(f"{path} lacks the entry {exc}; it is not a complete checkpoint") from None
        return saved

    def _record(self, run, held, T, log, elbo=None) -> None:
        entry = {"iteration": run["iteration"], "time": run["elapsed"]}
        if elbo is not None:
            entry["elbo"] = float(elbo)
        if held is not None:
            entry[self._metric] = float(self._evaluate(T, held))
        run["history"].append(entry)
        log.add(run["iteration"], **{k: v for k, v in entry.items() if k != "iteration"})
        shown = ", ".join(f"{k} {v:.5g}" for k, v in entry.items() if k not in ("iteration",))
        say(f"{self.algorithm} iteration {run['iteration']}/{self.max_iter}: {shown}", self.quiet)

    def _fit_sync(self, data, T, S, state, run, config, generator, held, ckpt, log) -> torch.Tensor:
        """batch, bsp and svi: one global update per step, every rank in step."""
        previous = None
        n_local = self._n_items(data)
        steps_per_pass = math.ceil(n_local / self.batch_size) if self.algorithm == "svi" else 1
        schedule = self._schedule()  # (τ, κ) of ρ_t
        while run["iteration"] < self.max_iter:
            clock = time.perf_counter()
            if self.algorithm == "svi":
                if run["step"] % steps_per_pass == 0 or "order" not in run:
                    run["order"] = torch.randperm(n_local, generator=generator)
                pos = run["step"] % steps_per_pass
                rows = run["order"][pos * self.batch_size : (pos + 1) * self.batch_size]
                S_batch = self._estep(data, T, state, rows)
                rho = learning_rate(run["step"], *schedule)
                T = (1 - rho) * T + rho * (n_local / len(rows)) * S_batch
                run["step"] += 1
                run["elapsed"] += time.perf_counter() - clock
                if run["step"] % steps_per_pass:
                    ckpt.step(lambda T=T, S=S, p=previous: self._state(T, S, state, run, config, generator, p))
                    continue
                elbo = None
            else:
                S = self._estep(data, T, state)
                T = distributed.all_reduce_(S.clone())
                run["elapsed"] += time.perf_counter() - clock
                elbo = self._elbo(data, T, state)
            run["iteration"] += 1
            if run["iteration"] % self.eval_every == 0 or run["iteration"] == self.max_iter:
                self._record(run, held, T, log, elbo)
                self._keep_best(run, T)
            previous = self._state(T, S, state, run, config, generator, previous)
            ckpt.epoch_end(lambda p=previous: p)
        return T

    # ------------------------------------------------------------------ ESVI
    def _fit_esvi(self, data, T, S, state, run, config, generator, held, ckpt, log) -> torch.Tensor:
        """Blocks of components circulate along the ring of ranks; see the module docstring for the update."""
        world, me = distributed.world_size(), distributed.rank()
        n_blocks, blocks = len(self._blocks), self._blocks
        home = [b for b in range(n_blocks) if b % world == me]
        rounds = self.max_iter
        width = max(len(b) for b in blocks) * T.shape[1]
        stochastic = self.esvi_update == "stochastic"
        most_steps = rounds * math.ceil(self._n_total / self.batch_size) if stochastic else 0
        if n_blocks >= 2**24 or rounds * world >= 2**24 or most_steps >= 2**24:
            raise GatelabError("too many blocks, rounds or stochastic steps for the token header")
        # tokens waiting here: (block, hops, steps, statistics of the block); hops // world is the block's round,
        # steps the number of stochastic updates the block has had (esvi_update="stochastic")
        block_steps = run.setdefault("block_steps", {})
        waiting: deque = deque((b, run["iteration"] * world, block_steps.get(b, 0), T[blocks[b]].clone()) for b in home)
        snapshots = run.setdefault("snapshots", {})
        sends: list = []
        recv = {"work": None, "buffer": None, "left": (rounds - run["iteration"]) * n_blocks if world > 1 else 0}
        timing = {"compute_seconds": 0.0, "message_seconds": 0.0, "messages": 0}  # for the cost model

        # NCCL sends device tensors, gloo host tensors
        wire = self._device if world > 1 and dist.get_backend() == "nccl" else torch.device("cpu")

        def post_receive():
            if recv["left"] > 0:
                recv["buffer"] = torch.empty(width + 3, dtype=T.dtype, device=wire)
                recv["work"] = with_peer(lambda: dist.irecv(recv["buffer"], src=(me - 1) % world))
                recv["left"] -= 1
            else:
                recv["work"] = None

        def with_peer(op):
            """``op()``, a message to or from a neighbour. If the neighbour is gone (gloo reports a reset
            connection at once, on a send as on a receive), a collective lets the heartbeat watchdog of
            gatelab.distributed name the lost rank and end this process."""
            try:
                return op()
            except (RuntimeError, dist.DistError):
                distributed.barrier()
                raise

        def receive():
            if recv["work"] is None:
                raise GatelabError("ESVI token ring: waiting for a block that no rank will send (internal error)")
            waited = time.perf_counter()
            with_peer(recv["work"].wait)
            buf = recv["buffer"]
            b, hops, steps = (int(v) for v in buf[:3].tolist())  # the token's header: one read per message
            rows = len(blocks[b])
            waiting.append((b, hops, steps, buf[3 : 3 + rows * T.shape[1]].reshape(rows, -1).to(self._device).clone()))
            post_receive()
            timing["message_seconds"] += time.perf_counter() - waited
            timing["messages"] += 1

        def send(b, hops, steps, stats):
            if world == 1:
                waiting.append((b, hops, steps, stats))
                return
            buf = torch.zeros(width + 3, dtype=T.dtype, device=wire)
            buf[0], buf[1], buf[2] = b, hops, steps
            buf[3 : 3 + stats.numel()] = stats.reshape(-1).to(wire)
            sends.append((with_peer(lambda: dist.isend(buf, dst=(me + 1) % world)), buf))

        post_receive()
        previous = None
        r = run["iteration"]
        clock = time.perf_counter()
        while True:
            # gate: round r starts here when this rank's home blocks are back from round r - 1
            back = [item for item in waiting if item[0] in home and item[1] == r * world]
            if len(back) < len(home):
                receive()
                continue
            run["elapsed"] += time.perf_counter() - clock
            if r > run["iteration"] or (r == 0 and not snapshots):
                for b, _, steps, stats in back:
                    snapshots.setdefault(r, {})[b] = (stats.clone(), run["elapsed"])
                    block_steps[b] = steps
                if r > 0 and (r % self.eval_every == 0 or r == rounds):  # for the ELBO of round r's statistics
                    run.setdefault("locals", {})[r] = self._local_snapshot(state)
                run["iteration"] = r
                T_home = T.clone()
                for b, _, _, stats in back:
                    T_home[blocks[b]] = stats
                previous = self._state(T_home, S, state, run, config, generator, previous)
                ckpt.epoch_end(lambda p=previous: p)
                say(f"esvi rank {me} round {r}/{rounds} at {run['elapsed']:.1f} s", self.quiet or me != 0)
            clock = time.perf_counter()
            if r == rounds:
                break
            for _ in range(n_blocks):  # this rank's round-r visits: every block once
                item = next((it for it in waiting if it[1] // world == r), None)
                while item is None:
                    receive()
                    item = next((it for it in waiting if it[1] // world == r), None)
                waiting.remove(item)
                b, hops, steps, stats = item
                rows = blocks[b]
                busy = time.perf_counter()
                if stochastic:
                    stats, steps = self._visit_stochastic(data, stats, b, steps, state)
                else:
                    new = self._visit(data, stats, b, state)
                    stats = stats - S[rows] + new  # equation (1)
                    S[rows] = new
                timing["compute_seconds"] += time.perf_counter() - busy
                send(b, hops + 1, steps, stats)
            r += 1
        for work, _ in sends:
            with_peer(work.wait)
        run["elapsed"] += time.perf_counter() - clock
        final = torch.zeros_like(T)
        for b, _, _, stats in back:
            final[blocks[b]] = stats
        T = distributed.all_reduce_(final)
        self.timing_ = timing  # this rank's: compute in visits, time blocked receiving, messages received
        self._esvi_history(data, run, held, T, log)
        return T

    def _visit_stochastic(self, data, T_block, block: int, steps: int, state: dict) -> tuple[torch.Tensor, int]:
        """ESVI's stochastic block update (``esvi_update="stochastic"``): the visit goes through the shard in
        minibatches B of ``batch_size`` points, in a fresh seeded order each visit; each updates the local
        parameters of B for the block's components (``_visit_batch``) and then the block by SVI's natural
        gradient step (Hoffman et al.), with the whole data's size N (all shards) in the rescaling:

            T_b ← (1 − ρ_t) T_b + ρ_t (N / |B|) S_{B,b},      ρ_t = (τ + t)^(−κ),                (3)

        where t counts the updates the block has had on every shard (it travels with the token), from the
        warm start (4), and (τ, κ) are ``ESVI_SCHEDULE`` unless given. Unlike (1),
        no shard's old statistics are kept: (3) forgets them geometrically, as online VB (gensim, scikit-learn)
        does, which on KOS reaches a lower held-out perplexity than the exact fixed point of (1)."""
        gen = torch.Generator().manual_seed(0)
        gen.set_state(state["order_generator"])
        order = torch.randperm(self._n_items(data), generator=gen).to(self._device)
        state["order_generator"] = gen.get_state()
        schedule = self._schedule()
        for rows in order.split(self.batch_size):
            S_batch = self._visit_batch(data, T_block, block, state, rows)
            rho = learning_rate(steps, *schedule)
            T_block = (1 - rho) * T_block + rho * (self._n_total / len(rows)) * S_batch
            steps += 1
        return T_block, steps

    def _visit_batch(self, data, T_block: torch.Tensor, block: int, state: dict, rows: torch.Tensor) -> torch.Tensor:
        """ESVI, stochastic form: update the local parameters of the points ``rows`` for the components of
        ``block``; return their statistics for the block."""
        raise NotImplementedError

    def _local_snapshot(self, state: dict) -> dict:
        """ESVI: a copy of the local parameters that the ELBO of a round's end needs; none by default (a model
        whose local bound depends on the statistics alone, as the Gaussian mixture's)."""
        return {}

    def _esvi_history(self, data, run, held, T, log) -> None:
        """History of ESVI: the statistics of every block at the end of each round, gathered from the ranks
        that held them, scored after the fit (so scoring never slows the ring). The ELBO of round r is that of
        its statistics with each shard's local parameters at its own round-r boundary: a consistent cut, as
        the module docstring explains, so it is the ELBO of one variational distribution."""
        snapshots, saved_locals = run.pop("snapshots"), run.pop("locals", {})
        for r in range(1, self.max_iter + 1):
            if r % self.eval_every and r != self.max_iter:
                continue
            stats, times = torch.zeros_like(T), torch.zeros(1, dtype=torch.float64)
            for b, (block_stats, at) in snapshots.get(r, {}).items():
                stats[self._blocks[b]] = block_stats
                times[0] = max(float(times[0]), at)
            stats = distributed.all_reduce_(stats)
            if distributed.is_distributed():
                dist.all_reduce(times, op=dist.ReduceOp.MAX)
            if any(h["iteration"] == r for h in run["history"]):
                continue
            entry = {"iteration": r, "time": float(times[0])}
            if r in saved_locals:
                entry["elbo"] = float(self._elbo(data, stats, saved_locals[r]))
            if held is not None:
                entry[self._metric] = float(self._evaluate(stats, held))
            run["history"].append(entry)
            log.add(r, **{k: v for k, v in entry.items() if k != "iteration"})
            self._keep_best(run, stats)
        run["history"].sort(key=lambda h: h["iteration"])
