"""Reproductions ``esvi-kos`` and ``esvi-gmm``: every algorithm and the peers against wall-clock time, the
1 vs 2 process scaling of ESVI, and a cost model for 4 to 64 workers from the measured times.

Each method is one stage (``report.stage``); in-process fits checkpoint into the run folder, so
``gatelab reproduce esvi-kos --resume RUN_DIR`` skips finished methods and continues the one in progress.
Curves are scored on a validation split carved from the training data; each fitted model is scored on the
test split once, after its fit, for the final table. The paper's figures cannot be retrieved here (only its
abstract is public offline), so the ``paper`` column stays empty.
"""

from __future__ import annotations

import numpy as np
import torch

from gatelab.data.bow import uci_paths, write_docword
from gatelab.data.store import data_dir
from gatelab.reproduce.registry import register
from gatelab.vi.compare import gensim_lda, sklearn_gmm, sklearn_lda, time_to_reach, torchrun_fit
from gatelab.vi.data import corpus_splits, table_splits
from gatelab.vi.gmm import GaussianMixtureVI
from gatelab.vi.lda import LDAVI
from gatelab.vi.plots import history_figure
from gatelab.vi.synthetic import synthetic_gmm, synthetic_lda

PAPER = (
    "Zhang, Raman, Ji, Yu, Vishwanathan, Dhillon. Extreme Stochastic Variational Inference: Distributed "
    "Inference for Large Scale Mixture Models. AISTATS 2019, PMLR 89:935-943, arXiv:1605.09499"
)
NO_PAPER_NUMBERS = (
    "The paper's figures and tables could not be retrieved offline (only its abstract is public here): the "
    "paper column is empty. Its abstract states only that ESVI-TOPK with the top 25% of topics reaches the "
    "same accuracy as storing all topics."
)

# local_iter caps the per-document steps, which stop earlier at LDAVI's local_tol (gensim's gamma_threshold)
KOS = {"topics": 50, "passes": 20, "local_iter": 50, "workers": 2}
KOS_QUICK = {"topics": 20, "passes": 4, "local_iter": 20, "workers": 2}
SCALING = {"n_docs": 20000, "n_words": 5000, "n_topics": 50, "doc_length": 200, "rounds": 10}
SCALING_QUICK = {"n_docs": 3000, "n_words": 2000, "n_topics": 20, "doc_length": 100, "rounds": 4}
GMM = {"n": 1_000_000, "components": 100, "dim": 20, "iterations": 30, "workers": 2}
GMM_QUICK = {"n": 20000, "components": 20, "dim": 5, "iterations": 10, "workers": 2}
WORKERS_MODELLED = (4, 8, 16, 32, 64)
REAL_ITERATIONS = 100  # Old Faithful and iris: small, so batch VI and scikit-learn run to convergence


def _one_thread(fn):
    """Run ``fn`` with one torch thread (deterministic, and no contention on a shared machine)."""

    def wrapped(report, quick, seed):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            fn(report, quick, seed)
        finally:
            torch.set_num_threads(before)

    wrapped.__name__ = fn.__name__
    return wrapped


@register("esvi-kos", "ESVI vs batch VI, SVI, BSP, gensim and scikit-learn LDA on Daily Kos", PAPER)
@_one_thread
def esvi_kos(report, quick: bool, seed: int) -> None:
    cfg = KOS_QUICK if quick else KOS
    k, passes, workers = cfg["topics"], cfg["passes"], cfg["workers"]
    blocks = min(2 * workers, k)
    docword, _ = uci_paths("kos", data_dir())
    splits = corpus_splits(docword, 0.1, 0.05, seed)
    report.settings.update({**cfg, "splits": splits.sizes, "priors": "alpha = eta = 1/K", "seed": seed})
    report.settings["perplexity"] = "held-out per-word perplexity by document completion (half of each document)"
    results: dict[str, dict] = {}

    def ours(key, options):
        def fit():
            model = LDAVI(k, max_iter=passes, local_iter=cfg["local_iter"], seed=seed, quiet=report.quiet, **options)
            opts = report.trainer_options(key)
            model.fit(splits.train, splits.val, checkpoint=opts["checkpoint"], resume=opts["resume"])
            return {"history": model.history_, "test": model.perplexity(splits.test), "elbo": model.elbo_}

        results[key] = report.stage(key, fit)

    def peer(key, fn):
        def fit():
            history, lam = fn(splits.train, splits.val, k, workers, passes, seed)
            return {"history": history, "test": LDAVI.from_components(lam, 1 / k, 1 / k).perplexity(splits.test)}

        results[key] = report.stage(key, fit)

    peer("gensim LdaMulticore", gensim_lda)
    peer("sklearn online LDA", sklearn_lda)
    ours("batch", {"algorithm": "batch"})
    ours("svi", {"algorithm": "svi", "batch_size": 256})
    ours("esvi (1 proc)", {"algorithm": "esvi", "n_blocks": blocks})
    ours("esvi-topk25% (1 proc)", {"algorithm": "esvi", "n_blocks": blocks, "topk": 0.25})
    cli = ["vi", "lda", str(docword), "--topics", str(k), "--iterations", str(passes), "--seed", str(seed)]
    cli += ["--local-iter", str(cfg["local_iter"]), "--blocks", str(blocks)]
    for key, extra in [
        (f"bsp ({workers} proc)", ["--algorithm", "bsp"]),
        (f"esvi ({workers} proc)", ["--algorithm", "esvi"]),
        (f"esvi-topk25% ({workers} proc)", ["--algorithm", "esvi", "--topk", "0.25"]),
        (f"esvi-incremental ({workers} proc)", ["--algorithm", "esvi", "--esvi-update", "incremental"]),
    ]:
        results[key] = report.stage(key, lambda extra=extra: _torchrun_result(cli + extra, workers, "test_perplexity"))
    _table(report, results, "perplexity", "gensim LdaMulticore", lower_is_better=True)
    report.save_figure(
        history_figure({n: r["history"] for n, r in results.items()}, "perplexity", "KOS, validation"), "curves.png"
    )
    esvi, topk = results[f"esvi ({workers} proc)"]["test"], results[f"esvi-topk25% ({workers} proc)"]["test"]
    report.row("ESVI-TOPK 25% / ESVI test perplexity", None, topk / esvi, "target: within 1%")
    report.note(NO_PAPER_NUMBERS)
    _scaling(report, quick, seed)


def _torchrun_result(command, nproc, metric) -> dict:
    history, metrics = torchrun_fit(command, nproc)
    return {
        "history": history,
        "test": metrics[metric],
        "elbo": metrics["elbo"],
        "seconds": metrics["fit_seconds"],
        "timing": metrics.get("timing"),
    }


def _table(report, results, metric, peer, lower_is_better) -> None:
    target = results[peer]["history"][-1][metric]
    # the peer's first time at its own final value (not its last iteration's): the conservative ratio
    peer_time = time_to_reach(results[peer]["history"], target, metric, lower_is_better)
    for name, res in results.items():
        reached = time_to_reach(res["history"], target, metric, lower_is_better)
        note = f"validation {res['history'][-1][metric]:.4g} after {res['history'][-1]['time']:.1f} s; "
        note += f"reaches {peer}'s final in {reached:.1f} s" if reached is not None else f"never reaches {peer}'s final"
        report.row(f"{name}: test {metric}", None, res["test"], note)
        if name != peer and reached is not None:
            ratio = peer_time / max(reached, 1e-9)
            report.row(f"{name}: {peer}'s first time at its final / time to reach it", None, ratio, "> 1: faster")
    report.results["runs"] = results


def _scaling(report, quick: bool, seed: int) -> None:
    """ESVI on 1 and 2 processes on a SYNTHETIC corpus, and the cost model for more workers."""
    cfg = SCALING_QUICK if quick else SCALING
    path = report.folder / "synthetic" / "docword.synthetic.txt"
    if not path.is_file():
        corpus, _ = synthetic_lda(cfg["n_docs"], cfg["n_words"], cfg["n_topics"], cfg["doc_length"], seed=seed)
        write_docword(corpus, path)
    cli = ["vi", "lda", str(path), "--topics", str(cfg["n_topics"]), "--iterations", str(cfg["rounds"])]
    cli += ["--algorithm", "esvi", "--blocks", "4", "--local-iter", "3", "--seed", str(seed)]  # 4 <= n_topics
    runs = {p: report.stage(f"scaling-{p}", lambda p=p: _torchrun_result(cli, p, "test_perplexity")) for p in (1, 2)}
    report.settings["scaling corpus"] = f"SYNTHETIC LDA corpus {cfg}"
    one, two = runs[1], runs[2]
    target = one["history"][-1]["perplexity"] * 1.01
    t1, t2 = time_to_reach(one["history"], target, "perplexity"), time_to_reach(two["history"], target, "perplexity")
    speedup = t1 / t2 if t1 and t2 else None
    report.row(
        "ESVI 2 vs 1 process: speed-up to a fixed validation perplexity (synthetic)",
        None,
        speedup,
        f"target 1.01 x the 1-process final ({target:.4g}); goal >= 1.6",
    )
    report.row("ESVI 2 vs 1 process: total time ratio (same rounds, synthetic)", None, one["seconds"] / two["seconds"])
    model = _cost_model(one["timing"], two["timing"], cfg["rounds"])
    report.results["cost_model"] = model
    for workers, predicted in model["predicted_speedup"].items():
        report.row(f"cost model: predicted speed-up, {workers} workers", None, predicted, model["formula"])
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for p, run in runs.items():
        hist = run["history"]
        axes[0].plot([h["time"] for h in hist], [h["perplexity"] for h in hist], marker=".", label=f"{p} process")
    axes[0].set_xlabel("wall-clock seconds")
    axes[0].set_ylabel("validation perplexity (synthetic)")
    axes[0].legend()
    ps = sorted({1, 2, *map(int, model["predicted_speedup"])})
    axes[1].plot(ps, [model["speedup"](p) for p in ps], marker="o", label="cost model")
    axes[1].plot([1, 2], [1, one["seconds"] / two["seconds"]], "s", label="measured")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("workers")
    axes[1].set_ylabel("speed-up per round")
    axes[1].legend()
    model.pop("speedup")
    report.save_figure(fig, "scaling.png")


def _cost_model(one: dict, two: dict, rounds: int) -> dict:
    """Predicted speed-up per round on P workers from measured compute and message times:

        T(P) = W / P + B(P) · m,   B(P) = 2P blocks (the commands' default), so 2P messages per worker a round

    W, the compute of one round, is rank 0's time inside visits in the 1-process run (which sends nothing);
    m, the time per message, is rank 0's time blocked receiving a token in the 2-process run divided by the
    tokens it received (waiting for a slower peer included, so m is pessimistic). The bytes per message
    shrink as 1/P with B = 2P (a block holds K/B topics), which this model ignores: it is conservative.
    """
    w = one["compute_seconds"] / rounds
    m = two["message_seconds"] / max(two["messages"], 1)

    def speedup(p: int) -> float:
        return w / (w / p + 2 * p * m)

    return {
        "compute_per_round_s": w,
        "seconds_per_message": m,
        "formula": "T(P) = W/P + 2P·m (W: measured compute per round, m: measured seconds per message)",
        "predicted_speedup": {str(p): speedup(p) for p in WORKERS_MODELLED},
        "speedup": speedup,
    }


@register("esvi-gmm", "ESVI vs batch VI, SVI, BSP and scikit-learn's BayesianGaussianMixture", PAPER)
@_one_thread
def esvi_gmm(report, quick: bool, seed: int) -> None:
    for name, k in (("geyser", 2), ("iris", 3)):
        splits = table_splits(data_dir() / "gmm" / f"{name}.csv", 0.1, 0.1, seed)

        def real(splits=splits, k=k):
            ours = GaussianMixtureVI(k, max_iter=REAL_ITERATIONS, seed=seed, dtype=torch.float64).fit(splits.train)
            _, peer = sklearn_gmm(splits.train, splits.val, k, REAL_ITERATIONS, seed)
            return {"ours": ours.score(splits.test), "sklearn": float(peer.score(splits.test.numpy()))}

        got = report.stage(f"real-{name}", real)
        report.row(
            f"{name} (K={k}): test log-likelihood per point, batch VI",
            None,
            got["ours"],
            "",
            reference=got["sklearn"],
            source="scikit-learn BayesianGaussianMixture, same split, run here",
        )
    cfg = GMM_QUICK if quick else GMM
    k, iters, workers = cfg["components"], cfg["iterations"], cfg["workers"]
    blocks = min(2 * workers, k)
    path = report.folder / "synthetic" / "mixture.csv"
    if not path.is_file():
        x, _, _ = synthetic_gmm(cfg["n"], k, cfg["dim"], seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(path, x.numpy(), delimiter=",", fmt="%.6f")
    splits = table_splits(path, 0.1, 0.1, seed)
    report.settings.update({**cfg, "data": f"SYNTHETIC mixture {cfg}", "splits": {**splits.sizes, "features": None}})
    results: dict[str, dict] = {}

    def peer():
        history, model = sklearn_gmm(splits.train, splits.val, k, iters, seed)
        return {"history": history, "test": float(model.score(splits.test.numpy()))}

    results["sklearn BayesianGM"] = report.stage("sklearn", peer)
    for key, options in [
        ("batch", {"algorithm": "batch"}),
        ("svi", {"algorithm": "svi", "batch_size": 2000}),
        ("esvi (1 proc)", {"algorithm": "esvi", "n_blocks": blocks}),
        ("esvi-topk25% (1 proc)", {"algorithm": "esvi", "n_blocks": blocks, "topk": 0.25}),
    ]:

        def fit(key=key, options=options):
            model = GaussianMixtureVI(k, max_iter=iters, seed=seed, dtype=torch.float64, quiet=report.quiet, **options)
            opts = report.trainer_options(key)
            model.fit(splits.train, splits.val, checkpoint=opts["checkpoint"], resume=opts["resume"])
            return {"history": model.history_, "test": model.score(splits.test), "elbo": model.elbo_}

        results[key] = report.stage(key, fit)
    cli = ["vi", "gmm", str(path), "--components", str(k), "--iterations", str(iters), "--seed", str(seed)]
    cli += ["--blocks", str(blocks)]
    for key, extra, nproc in [
        ("esvi (1 proc, torchrun)", ["--algorithm", "esvi"], 1),
        (f"bsp ({workers} proc)", ["--algorithm", "bsp"], workers),
        (f"esvi ({workers} proc)", ["--algorithm", "esvi"], workers),
    ]:
        results[key] = report.stage(key, lambda e=extra, p=nproc: _torchrun_result(cli + e, p, "test_loglik_per_point"))
    _table(report, results, "loglik", "sklearn BayesianGM", lower_is_better=False)
    report.save_figure(
        history_figure({n: r["history"] for n, r in results.items()}, "loglik", "synthetic mixture, validation"),
        "curves.png",
    )
    one, two = results["esvi (1 proc, torchrun)"], results[f"esvi ({workers} proc)"]
    report.row("ESVI 2 vs 1 process: total time ratio (same iterations)", None, one["seconds"] / two["seconds"])
    report.note(NO_PAPER_NUMBERS)
