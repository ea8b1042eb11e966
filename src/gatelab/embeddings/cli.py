"""``gatelab word2vec train|eval``: train word vectors, evaluate a vectors file."""

from __future__ import annotations

import os
import sys
from pathlib import Path


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
    t.add_argument("--out", required=True, help="vectors file to write (the config goes to OUT.json)")
    t.add_argument("--text", action="store_true", help="write the text format instead of binary")
    t.add_argument("--size", "--vector-size", dest="vector_size", type=int, default=100)
    t.add_argument("--window", type=int, default=5)
    t.add_argument("--negative", type=int, default=5)
    t.add_argument("--sample", type=float, default=1e-3)
    t.add_argument("--min-count", type=int, default=5)
    t.add_argument("--epochs", "--iter", dest="epochs", type=int, default=5)
    t.add_argument("--alpha", type=float, default=0.025)
    t.add_argument("--min-alpha", type=float, default=0.0001)
    t.add_argument("--workers", "--threads", dest="workers", type=int, default=min(3, os.cpu_count() or 1))
    t.add_argument(
        "--batch-size", type=int, default=None, help="context words sharing one negative draw (default 2*window)"
    )
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--device", default="cpu", help="cpu (numba kernel) or cuda (batched torch path)")
    t.add_argument("--backend", default="auto", help="auto | numba | torch")
    t.add_argument("--lowercase", action="store_true", help="lower-case a plain text corpus")
    t.add_argument("--sync-every", type=int, default=1, help="distributed: rounds between model averages")
    t.add_argument(
        "--min-sync-words",
        type=int,
        default=1024,
        help="distributed: rows averaged at every sync (doubling on every 2nd, 4th, ... sync)",
    )
    t.add_argument("--full-sync-times", type=int, default=0, help="distributed: full averages during training")
    t.add_argument("--data-dir", default=None, help="data folder (default $GATELAB_DATA or ~/.cache/gatelab)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    e = sub.add_parser(
        "eval",
        help="evaluate a vectors file on every evaluation set found",
        description="Evaluate word2vec-format vectors on WS-353, SimLex-999 and the Google "
        "analogies found under DATA/word-eval.",
    )
    e.add_argument("vectors", help="word2vec text or binary file (format detected)")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--sections", action="store_true", help="also print every analogy section")
    e.add_argument("--json", default=None, help="also write the results to this JSON file")
    e.set_defaults(func=_eval)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _init_distributed(device: str):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist


def _train(args) -> int:
    from gatelab.data.text import open_corpus
    from gatelab.embeddings.word2vec import Word2Vec
    from gatelab.files import write_json

    dist = _init_distributed(args.device)
    rank = dist.get_rank() if dist else 0
    try:
        corpus = open_corpus(args.corpus, root=args.data_dir, lowercase=args.lowercase)
        params = dict(
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
            device=args.device,
            backend=args.backend,
            sync_every=args.sync_every,
            min_sync_words=args.min_sync_words,
            full_sync_times=args.full_sync_times,
        )
        if dist and args.device.startswith("cuda"):
            params["device"] = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        model = Word2Vec(progress=not args.quiet, **params)
        if rank == 0 and not args.quiet:
            note = " (SYNTHETIC corpus: throughput only)" if getattr(corpus, "synthetic", False) else ""
            print(f"corpus: {corpus!r}{note}", file=sys.stderr)
        model.build_vocab(corpus)
        model.train()
        model.close()
        if rank == 0:
            out = Path(args.out)
            model.wv.save_word2vec_format(out, binary=not args.text)
            write_json(
                out.with_name(out.name + ".json"),
                {
                    "config": model.config_dict(),
                    "train": model.train_stats_,
                    "vocab_size": len(model.vocab),
                    "corpus": repr(corpus),
                    "synthetic": bool(getattr(corpus, "synthetic", False)),
                },
            )
            s = model.train_stats_
            print(
                f"vocabulary {len(model.vocab)} words; {s['raw_words']} raw words ({s['effective_words']} after "
                f"subsampling) in {s['seconds']:.1f}s: {s['words_per_sec'] / 1e3:.0f}k raw words/s on "
                f"{s['processes']} process(es) x {s['threads']} thread(s) [{s['backend']}]"
            )
            print(f"wrote {out} ({'text' if args.text else 'binary'}) and {out.name}.json")
    finally:
        if dist is not None:
            dist.destroy_process_group()
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
