"""``gatelab vi lda|gmm``: fit a topic model or a Gaussian mixture by batch VI, SVI, BSP or ESVI.

Under ``torchrun --nproc_per_node N -m gatelab vi lda ...`` each process reads
its own shard of the training documents (or rows); rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from gatelab import distributed
from gatelab.checkpoint import checkpoint_beside
from gatelab.files import atomic_dir, write_json, write_text
from gatelab.options import (
    add_training,
    fraction,
    nonnegative_float,
    output_folder,
    positive_float,
    positive_int,
    probability,
)
from gatelab.vi.base import ALGORITHMS, ESVI_SCHEDULE, ESVI_UPDATES, SVI_SCHEDULE


def _topk(text: str) -> int | float:
    """A count >= 1 of components, or a fraction in (0, 1] of them."""
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        return fraction(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a count >= 1 or a fraction in (0, 1], got {text!r}") from None


def _common(p: argparse.ArgumentParser, iterations: int, val_default: float) -> None:
    p.add_argument("--algorithm", choices=ALGORITHMS, default="esvi", help="how to fit (default: %(default)s)")
    p.add_argument(
        "--iterations",
        type=positive_int,
        default=iterations,
        help="passes over the data (batch/bsp iterations, SVI epochs, ESVI rounds) (default: %(default)s)",
    )
    p.add_argument(
        "--local-iter",
        type=positive_int,
        default=None,
        help="local updates per pass; LDA: the most, stopping earlier at --local-tol (default: 50 LDA, 1 GMM)",
    )
    p.add_argument("--batch-size", type=positive_int, default=256, help="SVI minibatch size (default: %(default)s)")
    p.add_argument(
        "--tau",
        type=positive_float,
        default=None,
        help=f"delay τ of the step sizes (τ+t)^-κ of SVI and stochastic ESVI (default: {SVI_SCHEDULE[0]:g} for svi, "
        f"{ESVI_SCHEDULE[0]:g} for esvi)",
    )
    p.add_argument(
        "--kappa",
        type=fraction,
        default=None,
        help=f"forgetting rate κ in (0.5, 1] of the same step sizes (default: {SVI_SCHEDULE[1]:g} for svi, "
        f"{ESVI_SCHEDULE[1]:g} for esvi)",
    )
    p.add_argument(
        "--blocks", type=positive_int, default=None, help="ESVI component blocks (default: 2 × processes, at most K)"
    )
    p.add_argument(
        "--esvi-update",
        choices=ESVI_UPDATES,
        default=None,
        help="ESVI's block update: incremental (each shard's statistics replaced exactly) or stochastic (SVI steps "
        "on minibatches of --batch-size, with --tau and --kappa, from the incremental update's start) "
        "(default: stochastic for lda, incremental for gmm)",
    )
    p.add_argument(
        "--topk",
        type=_topk,
        default=None,
        help="ESVI-TOPK: components kept per point, a count or fraction (default: all)",
    )
    p.add_argument(
        "--holdout", type=probability, default=0.1, help="fraction held out for the final test (default: %(default)s)"
    )
    p.add_argument(
        "--val-size",
        type=probability,
        default=val_default,
        help="fraction of the rest held out for validation, scored along the way (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=output_folder,
        required=True,
        help="output folder (model.pt, history.json, history.png, metrics.json); the checkpoint is OUT.checkpoint.pt",
    )
    p.add_argument(
        "--dist-timeout",
        type=positive_float,
        default=distributed.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="distributed: how long a collective may wait; a peer silent for min(this, 30) s is reported lost "
        "(default: %(default)s)",
    )
    add_training(p)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "vi",
        help="mixture models by variational inference: batch, SVI, bulk-synchronous, ESVI",
        description="Fit LDA or a Gaussian mixture; run under torchrun for bsp or esvi on several processes.",
    )
    sub = p.add_subparsers(dest="vi_command", metavar="MODEL", parser_class=type(p))
    lda = sub.add_parser("lda", help="fit a topic model to a UCI bag-of-words file", description=_run_lda.__doc__)
    lda.add_argument("docword", help="UCI docword file (docword.NAME.txt)")
    lda.add_argument("--vocab", default=None, help="vocabulary file (default: vocab.NAME.txt beside DOCWORD)")
    lda.add_argument("--topics", type=positive_int, default=50, help="number of topics K (default: %(default)s)")
    lda.add_argument("--top-words", type=positive_int, default=10, help="words shown per topic (default: %(default)s)")
    lda.add_argument(
        "--local-tol",
        type=nonnegative_float,
        default=1e-3,
        help="a document's γ has converged when its mean change is below this (0: always --local-iter steps) "
        "(default: %(default)s)",
    )
    _common(lda, iterations=20, val_default=0.05)
    lda.set_defaults(func=_run_lda)
    gmm = sub.add_parser("gmm", help="fit a Gaussian mixture to a numeric CSV file", description=_run_gmm.__doc__)
    gmm.add_argument("csv", help="CSV file, one point per row (a header row and text columns are skipped)")
    gmm.add_argument(
        "--components", type=positive_int, default=10, help="number of components K (default: %(default)s)"
    )
    _common(gmm, iterations=50, val_default=0.1)
    gmm.set_defaults(func=_run_gmm)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _model_options(args) -> dict:
    options = dict(
        algorithm=args.algorithm,
        max_iter=args.iterations,
        batch_size=args.batch_size,
        tau=args.tau,
        kappa=args.kappa,
        n_blocks=args.blocks,
        topk=args.topk,
        seed=args.seed,
        device=args.device,
        quiet=args.quiet or not distributed.is_main(),
    )
    for name in ("local_iter", "esvi_update"):  # None: the model's own default
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options


def _fit(model, splits, args) -> None:
    model.fit(
        splits.train,
        splits.val,
        checkpoint=checkpoint_beside(args.out),
        resume=args.resume,
        checkpoint_every=args.checkpoint_every,
        log_dir=args.log_dir if distributed.is_main() else None,
    )


def _write(out: str, model, metrics: dict, metric: str, extra_files: dict) -> None:
    from gatelab.vi.plots import history_figure

    with atomic_dir(out) as folder:
        model.save(folder / "model.pt")
        write_json(folder / "history.json", model.history_)
        write_json(folder / "metrics.json", metrics)
        for name, text in extra_files.items():
            write_text(folder / name, text)
        fig = history_figure({model.algorithm: model.history_}, metric, title=f"{type(model).__name__}")
        fig.savefig(folder / "history.png", dpi=110)


def _run_lda(args) -> int:
    """Fit LDA to a UCI bag-of-words file: the top words of each topic, held-out perplexity (document
    completion) on a test split read once at the end, and the ELBO/perplexity history against time."""
    from gatelab.data.bow import read_header, read_vocab
    from gatelab.vi.data import corpus_splits
    from gatelab.vi.lda import LDAVI

    docword = Path(args.docword)
    _, n_words, _ = read_header(docword)
    vocab_path = Path(args.vocab) if args.vocab else docword.with_name(docword.name.replace("docword", "vocab", 1))
    vocab = read_vocab(vocab_path, n_words) if args.vocab or vocab_path.is_file() else None
    distributed.init(args.dist_timeout, args.device)
    try:
        splits = corpus_splits(docword, args.holdout, args.val_size, args.seed)
        model = LDAVI(args.topics, local_tol=args.local_tol, **_model_options(args))
        _fit(model, splits, args)
        perplexity = model.perplexity(splits.test)
        if distributed.is_main():
            topics = model.top_words(args.top_words, vocab)
            text = "\n".join(f"topic {k}: " + " ".join(map(str, words)) for k, words in enumerate(topics)) + "\n"
            metrics = {
                "test_perplexity": perplexity,
                "timing": getattr(model, "timing_", None),
                "elbo": model.elbo_,
                "fit_seconds": model.fit_seconds_,
                "config": model.config_,
                "splits": splits.sizes,
            }
            _write(args.out, model, metrics, "perplexity", {"topics.txt": text})
            if not args.quiet:
                print(text.rstrip())
            print(
                f"{args.algorithm}: test perplexity {perplexity:.1f} (document completion, {splits.sizes['test']} "
                f"documents), ELBO {model.elbo_:.6g}, {model.fit_seconds_:.1f} s; wrote {args.out}",
                file=sys.stderr if args.quiet else sys.stdout,
            )
    finally:
        distributed.shutdown()
    return 0


def _run_gmm(args) -> int:
    """Fit a Gaussian mixture (diagonal Normal-Gamma components, Dirichlet weights) to a numeric CSV file:
    weights, means and variances, the test log-likelihood per point (test split read once at the end), and
    the ELBO/log-likelihood history against time."""
    from gatelab.vi.data import table_splits
    from gatelab.vi.gmm import GaussianMixtureVI

    distributed.init(args.dist_timeout, args.device)
    try:
        splits = table_splits(args.csv, args.holdout, args.val_size, args.seed)
        model = GaussianMixtureVI(args.components, dtype=torch.float64, **_model_options(args))
        _fit(model, splits, args)
        loglik = model.score(splits.test)
        if distributed.is_main():
            components = {
                "features": splits.sizes["features"],
                "weights": model.weights_.tolist(),
                "means": model.means_.tolist(),
                "variances": model.covariances_.tolist(),
            }
            metrics = {
                "test_loglik_per_point": loglik,
                "timing": getattr(model, "timing_", None),
                "elbo": model.elbo_,
                "fit_seconds": model.fit_seconds_,
                "config": model.config_,
                "splits": splits.sizes,
            }
            _write(args.out, model, metrics, "loglik", {"components.json": json.dumps(components, indent=2) + "\n"})
            print(
                f"{args.algorithm}: test log-likelihood {loglik:.4f} per point ({splits.sizes['test']} rows), "
                f"ELBO {model.elbo_:.6g}, {model.fit_seconds_:.1f} s; wrote {args.out}"
            )
    finally:
        distributed.shutdown()
    return 0
