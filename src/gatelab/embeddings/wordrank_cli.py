"""``gatelab wordrank cooccur|train``: count co-occurrences, train WordRank vectors."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gatelab import distributed
from gatelab.embeddings.wordrank import LOSSES, RHOS, WordRankConfig
from gatelab.files import check_output_path
from gatelab.options import add_common, add_training, nonnegative_float, output_file, positive_float, positive_int

_CORPUS_HELP = (
    "text file (one sentence a line), a Brown-style .zip, or ptb | brown | brown+ptb | zipf:N[:V]; "
    "for train also a co-occurrence .npz written by the cooccur action"
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "wordrank",
        help="train WordRank vectors (ranking-based word embeddings)",
        description="WordRank (Ji et al., EMNLP 2016): word embeddings by robust ranking of co-occurrences.",
    )
    sub = p.add_subparsers(dest="wordrank_command", metavar="ACTION", parser_class=type(p))
    d = WordRankConfig()
    num = dict(type=positive_int)

    def counting(q) -> None:
        q.add_argument("corpus", help=_CORPUS_HELP)
        q.add_argument("--window", **num, default=d.window, help="largest context distance (default: %(default)s)")
        q.add_argument(
            "--min-count", **num, default=d.min_count, help="drop words seen fewer times (default: %(default)s)"
        )
        q.add_argument("--max-vocab-size", **num, default=None, help="keep at most this many words (default: no limit)")
        q.add_argument("--lowercase", action="store_true", help="lower-case a plain text corpus (default: as written)")
        q.add_argument("--data-dir", default=None, help="data folder (default: $GATELAB_DATA, else ~/.cache/gatelab)")

    c = sub.add_parser(
        "cooccur",
        help="count a corpus's co-occurrences once, for several trainings",
        description="Count symmetric, 1/distance-weighted co-occurrences (GloVe's window) into a sparse .npz.",
    )
    counting(c)
    c.add_argument("--out", required=True, type=output_file, help="co-occurrence file to write (.npz)")
    add_common(c, device=False, seed=False)
    c.set_defaults(func=_cooccur)

    t = sub.add_parser(
        "train",
        help="train WordRank vectors on a corpus or a co-occurrence file",
        description="Train WordRank; OUT gets the word vectors U (what the authors evaluate similarity on).",
    )
    counting(t)
    t.add_argument(
        "--out",
        required=True,
        help="vectors file to write (word vectors U); the config goes to OUT.json, and an unfinished run keeps "
        "its co-occurrence matrix and checkpoint in OUT.wordrank-work/ (removed when training finishes)",
    )
    t.add_argument(
        "--sum-out", default=None, help="also write word + context vectors U + V here (default: not written)"
    )
    t.add_argument("--context-out", default=None, help="also write the context vectors V here (default: not written)")
    t.add_argument("--text", action="store_true", help="write the text format instead of binary (default: binary)")
    t.add_argument(
        "--size", "--vector-size", dest="vector_size", **num, default=d.vector_size, help="dimension (default: 100)"
    )
    t.add_argument("--rho", choices=RHOS, default=d.rho, help="rank transformation (default: %(default)s)")
    t.add_argument("--loss", choices=LOSSES, default=d.loss, help="rank surrogate's loss (default: %(default)s)")
    t.add_argument(
        "--xi-alpha",
        type=positive_float,
        default=d.alpha,
        help="the paper's alpha: xi = alpha / (rank + beta) (default: %(default)s)",
    )
    t.add_argument(
        "--xi-beta",
        type=nonnegative_float,
        default=d.beta,
        help="the paper's beta, see --xi-alpha (default: %(default)s)",
    )
    t.add_argument("--t", type=positive_float, default=d.t, help="t of rho3's log_t (default: %(default)s)")
    t.add_argument(
        "--x-max",
        type=_x_max,
        default=d.x_max,
        help="weight cut-off x_max, or auto: 100 scaled to the corpus size as on text8 (default: %(default)s)",
    )
    t.add_argument(
        "--epsilon", type=positive_float, default=d.epsilon, help="weight exponent epsilon (default: %(default)s)"
    )
    t.add_argument(
        "--lr",
        type=positive_float,
        default=d.lr,
        help="step size: plain SGD's, times nnz / sum(r) as the authors' (they use 0.001 for thousands of "
        "sweeps), or AdaGrad's (default: %(default)s)",
    )
    t.add_argument("--epochs", **num, default=d.epochs, help="passes over the nonzeros (default: %(default)s)")
    t.add_argument("--sgd-num", **num, default=d.sgd_num, help="updates per nonzero an epoch (default: %(default)s)")
    t.add_argument(
        "--period",
        **num,
        default=d.period,
        help="epochs between xi updates; none in the last epoch (default: %(default)s)",
    )
    t.add_argument(
        "--optimizer",
        choices=("sgd", "adagrad"),
        default=d.optimizer,
        help="the authors' plain SGD, or AdaGrad (default: %(default)s; AdaGrad wants --lr about 0.05)",
    )
    t.add_argument(
        "--workers",
        "--threads",
        dest="workers",
        **num,
        default=min(2, os.cpu_count() or 1),
        help="Hogwild threads (default: %(default)s, i.e. min(2, CPU cores))",
    )
    t.add_argument(
        "--reg", type=nonnegative_float, default=d.reg, help="L2 penalty per AdaGrad update (default: %(default)s)"
    )
    t.add_argument(
        "--dist-timeout",
        type=positive_float,
        default=distributed.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="under torchrun: how long a collective may wait before the run stops with an error; a peer silent "
        "for min(this, 30) seconds is reported lost (default: %(default)s)",
    )
    add_training(t)
    t.set_defaults(func=_train)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _corpus(args):
    from gatelab.data.text import open_corpus

    return open_corpus(args.corpus, root=args.data_dir, lowercase=args.lowercase)


def _cooccur(args) -> int:
    from gatelab.embeddings.cooccurrence import count_cooccurrences

    matrix = count_cooccurrences(
        _corpus(args),
        window=args.window,
        min_count=args.min_count,
        max_vocab_size=args.max_vocab_size,
        progress=not args.quiet,
    )
    matrix.save(args.out)
    print(f"wrote {args.out}: {len(matrix.vocab)} words, {matrix.nnz} nonzeros from {matrix.n_words} words")
    return 0


def _x_max(text: str) -> float | str:
    """``--x-max``: a number > 0, or ``auto``."""
    if text == "auto":
        return text
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0 or auto, got {text!r}") from None


def _train(args) -> int:
    for path in (args.out, args.sum_out, args.context_out):
        if path is not None:
            check_output_path(path)  # before anything is read
    distributed.init(timeout=args.dist_timeout, device=args.device)
    try:
        return _train_here(args)
    finally:
        distributed.shutdown()


def _train_here(args) -> int:
    """Train in this process (one of several under torchrun: rank 0 counts, prints and writes)."""
    from gatelab.embeddings.wordrank import train_wordrank

    main = distributed.is_main()
    if str(args.corpus).endswith(".npz"):
        from gatelab.embeddings.cooccurrence import CooccurrenceMatrix

        data = CooccurrenceMatrix.load(args.corpus)  # every rank reads the saved matrix
        shown = f"co-occurrences {args.corpus} ({len(data.vocab)} words, {data.nnz} nonzeros)"
    else:
        data = _corpus(args)
        shown = f"corpus {data!r}"
    if main and not args.quiet:
        print(shown, file=sys.stderr)
    model = train_wordrank(
        data,
        out=args.out,
        binary=not args.text,
        sum_out=args.sum_out,
        context_out=args.context_out,
        progress=not args.quiet,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        log_dir=args.log_dir,
        vector_size=args.vector_size,
        window=args.window,
        min_count=args.min_count,
        max_vocab_size=args.max_vocab_size,
        rho=args.rho,
        loss=args.loss,
        alpha=args.xi_alpha,
        beta=args.xi_beta,
        t=args.t,
        x_max=args.x_max,
        epsilon=args.epsilon,
        lr=args.lr,
        epochs=args.epochs,
        sgd_num=args.sgd_num,
        period=args.period,
        optimizer=args.optimizer,
        reg=args.reg,
        workers=args.workers,
        seed=args.seed,
        device=args.device,
    )
    if not main:
        return 0
    s = model.train_stats_
    resumed = f", resumed at update {s['resumed_from_updates']}" if args.resume else ""
    print(
        f"vocabulary {s['vocab_size']} words, {s['nnz']} nonzeros; {s['updates']} updates in {s['seconds']:.1f}s: "
        f"{s['pairs_per_sec'] / 1e6:.2f}M pairs/s on {s['processes']} process(es) x {s['threads']} thread(s)"
        f"{resumed}"
    )
    print(f"wrote {args.out} ({'text' if args.text else 'binary'}) and {Path(args.out).name}.json")
    return 0
