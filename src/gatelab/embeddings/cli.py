"""``gatelab word2vec train|eval``: train word vectors, evaluate a vectors file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gatelab import distributed
from gatelab.embeddings.word2vec import Word2VecConfig
from gatelab.files import check_output_path
from gatelab.options import (
    add_training,
    nonnegative_float,
    nonnegative_int,
    output_file,
    positive_float,
    positive_int,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "word2vec",
        help="train and evaluate HogBatch word2vec vectors",
        description="HogBatch word2vec: skip-gram with shared negative samples.",
    )
    sub = p.add_subparsers(dest="w2v_command", metavar="ACTION", parser_class=type(p))

    t = sub.add_parser(
        "train",
        help="train vectors on a corpus",
        description="Train skip-gram vectors. Under `torchrun --nproc_per_node N -m gatelab "
        "word2vec train ...` the processes share the work (gloo on cpu).",
    )
    t.add_argument(
        "corpus",
        help="text file (one sentence a line), a Brown-style .zip, or ptb | brown | "
        "brown+ptb | zipf:N[:V] (synthetic Zipf corpus of N tokens)",
    )
    t.add_argument(
        "--out",
        required=True,
        help="vectors file to write; the config goes to OUT.json, and an unfinished run keeps its encoded "
        "corpus and checkpoint in OUT.work/ (removed when training finishes)",
    )
    t.add_argument("--text", action="store_true", help="write the text format instead of binary (default: binary)")
    d = Word2VecConfig()
    num = dict(type=positive_int)
    t.add_argument(
        "--size",
        "--vector-size",
        dest="vector_size",
        **num,
        default=d.vector_size,
        help="vector dimension (default: %(default)s)",
    )
    t.add_argument("--window", **num, default=d.window, help="largest context distance (default: %(default)s)")
    t.add_argument(
        "--negative",
        **num,
        default=d.negative,
        help="noise words drawn per batch of context words; repeats become multiplicities (default: %(default)s)",
    )
    t.add_argument(
        "--sample",
        type=nonnegative_float,
        default=d.sample,
        help="subsampling threshold of frequent words, 0 for none (default: %(default)s)",
    )
    t.add_argument("--min-count", **num, default=d.min_count, help="drop words seen fewer times (default: %(default)s)")
    t.add_argument(
        "--epochs",
        "--iter",
        dest="epochs",
        **num,
        default=d.epochs,
        help="passes over the corpus (default: %(default)s)",
    )
    t.add_argument("--alpha", type=positive_float, default=d.alpha, help="initial learning rate (default: %(default)s)")
    t.add_argument(
        "--min-alpha",
        type=nonnegative_float,
        default=d.min_alpha,
        help="final learning rate of the linear decay (default: %(default)s)",
    )
    t.add_argument(
        "--workers",
        "--threads",
        dest="workers",
        **num,
        default=min(3, os.cpu_count() or 1),
        help="threads per process (default: %(default)s, i.e. min(3, CPU cores))",
    )
    t.add_argument(
        "--batch-size",
        **num,
        default=None,
        help="context words sharing one negative draw (default: 2 * window)",
    )
    t.add_argument(
        "--backend",
        default=d.backend,
        choices=("auto", "numba", "torch"),
        help="numba kernel (cpu) or batched torch (any device); auto picks by --device (default: %(default)s)",
    )
    t.add_argument("--lowercase", action="store_true", help="lower-case a plain text corpus (default: as written)")
    t.add_argument(
        "--sync-every",
        **num,
        default=d.sync_every,
        help="distributed: rounds between model merges (default: %(default)s)",
    )
    t.add_argument(
        "--min-sync-words",
        **num,
        default=d.min_sync_words,
        help="distributed: rows merged at every sync, doubling on every 2nd, 4th, ... sync (default: %(default)s)",
    )
    t.add_argument(
        "--full-sync-times",
        type=nonnegative_int,
        default=d.full_sync_times,
        help="distributed: full merges during training (default: %(default)s)",
    )
    t.add_argument(
        "--dist-timeout",
        type=positive_float,
        default=distributed.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="distributed: how long a collective may wait before the run stops with an error; a peer silent "
        "for min(this, 30) seconds is reported lost (default: %(default)s)",
    )
    t.add_argument("--data-dir", default=None, help="data folder (default: $GATELAB_DATA, else ~/.cache/gatelab)")
    add_training(t)
    t.set_defaults(func=_train)

    e = sub.add_parser(
        "eval",
        help="evaluate a vectors file on every evaluation set found",
        description="Evaluate word2vec-format vectors on WS-353, SimLex-999 and the Google "
        "analogies found under DATA/word-eval.",
    )
    e.add_argument("vectors", help="word2vec text or binary file (format detected)")
    e.add_argument("--data-dir", default=None, help="data folder (default: $GATELAB_DATA, else ~/.cache/gatelab)")
    e.add_argument("--sections", action="store_true", help="also print every analogy section (default: off)")
    e.add_argument(
        "--json", type=output_file, default=None, help="also write the results to this JSON file (default: none)"
    )
    e.set_defaults(func=_eval)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _train(args) -> int:
    from gatelab.data.text import open_corpus
    from gatelab.embeddings.word2vec import train_word2vec

    check_output_path(args.out)  # before anything is read
    distributed.init(timeout=args.dist_timeout, device=args.device)
    try:
        corpus = open_corpus(args.corpus, root=args.data_dir, lowercase=args.lowercase)
        device = args.device
        if distributed.is_distributed() and device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        synthetic = bool(getattr(corpus, "synthetic", False))
        if distributed.is_main() and not args.quiet:
            note = " (SYNTHETIC corpus: throughput only)" if synthetic else ""
            print(f"corpus: {corpus!r}{note}", file=sys.stderr)
        model = train_word2vec(
            corpus,
            out=args.out,
            binary=not args.text,
            progress=not args.quiet,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            log_dir=args.log_dir,
            metadata={"synthetic": synthetic},
            vector_size=args.vector_size,
            window=args.window,
            negative=args.negative,
            sample=args.sample,
            min_count=args.min_count,
            epochs=args.epochs,
            alpha=args.alpha,
            min_alpha=args.min_alpha,
            workers=args.workers,
            batch_size=args.batch_size,
            seed=args.seed,
            device=device,
            backend=args.backend,
            sync_every=args.sync_every,
            min_sync_words=args.min_sync_words,
            full_sync_times=args.full_sync_times,
        )
        if distributed.is_main():
            s = model.train_stats_
            resumed = f", resumed at word {s['resumed_from_words']}" if args.resume else ""
            print(
                f"vocabulary {len(model.vocab)} words; {s['raw_words']} raw words ({s['effective_words']} after "
                f"subsampling) in {s['seconds']:.1f}s: {s['words_per_sec'] / 1e3:.0f}k raw words/s on "
                f"{s['processes']} process(es) x {s['threads']} thread(s) [{s['backend']}]{resumed}"
            )
            print(f"wrote {args.out} ({'text' if args.text else 'binary'}) and {Path(args.out).name}.json")
    finally:
        distributed.shutdown()
    return 0


def _eval(args) -> int:
    from gatelab.embeddings.evaluate import evaluate_all, format_table
    from gatelab.embeddings.keyedvectors import KeyedVectors
    from gatelab.files import write_json

    kv = KeyedVectors.load_word2vec_format(args.vectors)
    rows = evaluate_all(kv, args.data_dir)
    print(f"{args.vectors}: {len(kv)} words, dim {kv.vector_size}")
    print(format_table(rows))
    if args.sections:
        for r in rows:
            if r.get("kind") == "analogies" and "result" in r:
                for s in r["result"]["sections"]:
                    print(
                        f"  {s['section']:<28} {s['accuracy']:>7.4f}  ({s['correct']}/{s['correct'] + s['incorrect']},"
                        f" oov {s['oov']})"
                    )
    if all("missing" in r for r in rows):
        from gatelab.errors import GatelabError

        raise GatelabError(
            "no evaluation set found: put word-eval/EN-WS-353-ALL.txt, EN-SIMLEX-999.txt or "
            "questions-words.txt under the data folder (or pass --data-dir)"
        )
    if args.json:
        write_json(args.json, [{k: v for k, v in r.items()} for r in rows])
    return 0
