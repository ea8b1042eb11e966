"""gatelab's LDA (batch VI, SVI, bulk-synchronous, ESVI, ESVI-TOPK) against gensim LdaMulticore and
scikit-learn's online LatentDirichletAllocation on Daily Kos, side by side in one run.

Same data (10% of the documents held out for the test, --val-size of the rest for the validation curves),
same K, α = η = 1/K, same number of workers. Every model's topics are scored by the same code: held-out
per-word perplexity by document completion. Prints each one's final validation and test perplexity (ours:
of the iteration that did best on the validation split, which is also the model the test scores), its
final ELBO where it records one, and the wall-clock time it needs to reach gensim's (and scikit-learn's)
final validation perplexity, as a ratio of the peer's time ('never' if it does not reach it). ESVI runs
with both block updates: stochastic, LDA's default (equation (3) of gatelab.vi.base, SVI steps on
minibatches of 256 documents from the warm start (4)), and incremental (equation (1)). Times include
each method's start (our first local pass). Usage::

    python benchmarks/vi_lda.py [--topics 50] [--passes 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from gatelab.data.bow import uci_paths
from gatelab.vi.compare import gatelab_fit, gensim_lda, sklearn_lda, time_to_reach, torchrun_fit
from gatelab.vi.data import corpus_splits
from gatelab.vi.lda import LDAVI


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topics", type=int, default=50)
    ap.add_argument("--passes", type=int, default=10, help="passes over the training documents, for every method")
    ap.add_argument("--local-iter", type=int, default=50, help="gatelab: most local updates per pass")
    ap.add_argument("--local-tol", type=float, default=1e-3, help="gatelab: mean change of γ that stops them")
    ap.add_argument("--val-size", type=float, default=0.05, help="fraction of the training documents for validation")
    ap.add_argument("--blocks", type=int, default=None, help="ESVI topic blocks (default: one per worker)")
    ap.add_argument("--workers", type=int, default=2, help="processes for gensim, scikit-learn and ours")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    docword, _ = uci_paths("kos")
    splits = corpus_splits(docword, 0.1, args.val_size, args.seed)
    k, passes, blocks = args.topics, args.passes, args.blocks or args.workers
    print(f"KOS: {splits.sizes}; K={k}, {passes} passes, {args.workers} workers; torch {torch.__version__}, ")
    print(f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}; load average {_load()}")
    runs, tests = {}, {}
    runs["gensim LdaMulticore"], lam = gensim_lda(splits.train, splits.val, k, args.workers, passes, args.seed)
    tests["gensim LdaMulticore"] = LDAVI.from_components(lam, 1 / k, 1 / k).perplexity(splits.test)
    runs["sklearn online LDA"], lam = sklearn_lda(splits.train, splits.val, k, args.workers, passes, args.seed)
    tests["sklearn online LDA"] = LDAVI.from_components(lam, 1 / k, 1 / k).perplexity(splits.test)
    common = dict(max_iter=passes, local_iter=args.local_iter, local_tol=args.local_tol, seed=args.seed)
    for name, options in [
        ("gatelab batch", dict(algorithm="batch")),
        ("gatelab svi", dict(algorithm="svi", batch_size=256)),
        ("gatelab esvi 1 proc", dict(algorithm="esvi", n_blocks=blocks)),
        ("gatelab esvi-topk25% 1 proc", dict(algorithm="esvi", n_blocks=blocks, topk=0.25)),
        ("gatelab esvi-incremental 1 proc", dict(algorithm="esvi", n_blocks=blocks, esvi_update="incremental")),
    ]:
        model = LDAVI(k, **options, **common)
        runs[name] = gatelab_fit(model, splits.train, splits.val)
        tests[name] = model.perplexity(splits.test)
    cli = ["vi", "lda", str(docword), "--topics", str(k), "--iterations", str(passes)]
    cli += ["--local-iter", str(args.local_iter), "--local-tol", str(args.local_tol), "--seed", str(args.seed)]
    cli += ["--blocks", str(blocks), "--val-size", str(args.val_size)]
    for name, extra in [
        (f"gatelab bsp {args.workers} proc", ["--algorithm", "bsp"]),
        (f"gatelab esvi {args.workers} proc", ["--algorithm", "esvi"]),
        (f"gatelab esvi-topk25% {args.workers} proc", ["--algorithm", "esvi", "--topk", "0.25"]),
        (f"gatelab esvi-incremental {args.workers} proc", ["--algorithm", "esvi", "--esvi-update", "incremental"]),
        (
            f"gatelab esvi-incremental-topk25% {args.workers} proc",
            ["--algorithm", "esvi", "--esvi-update", "incremental", "--topk", "0.25"],
        ),
    ]:
        runs[name], metrics = torchrun_fit(cli + extra, args.workers)
        tests[name] = metrics["test_perplexity"]
    report(runs, tests, "perplexity", ["gensim LdaMulticore", "sklearn online LDA"], lower_is_better=True)
    print(f"load average after: {_load()}")


def report(runs: dict, tests: dict, metric: str, peers: list[str], lower_is_better: bool) -> None:
    """One line per method: final validation and test value, time, and the time to each peer's final value."""
    header = f"{'method':40s} {'val ' + metric:>14s} {'test':>10s} {'ELBO':>11s} {'time s':>8s}"
    for peer in peers:
        header += f" {'to ' + peer.split()[0] + ' s':>12s} {'ratio':>7s}"
    print(header)
    for name, hist in runs.items():
        final = hist[-1]
        elbo = f"{final['elbo']:.5g}" if "elbo" in final else "-"
        line = f"{name:40s} {final[metric]:14.4g} {tests[name]:10.4g} {elbo:>11s} {final['time']:8.1f}"
        for peer in peers:
            target = runs[peer][-1][metric]
            peer_time = time_to_reach(runs[peer], target, metric, lower_is_better)  # its first time there, not its end
            reached = time_to_reach(hist, target, metric, lower_is_better)
            line += f" {'never' if reached is None else f'{reached:.1f}':>12s}"
            line += f" {'-' if reached is None else f'{peer_time / max(reached, 1e-9):.2f}x':>7s}"
        print(line)
    print("ratio = the peer's first time at its own final value / this method's time to reach it (> 1: faster)")


def _load() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


if __name__ == "__main__":
    main()
