"""``gatelab lm``: train, evaluate and sample RNN language models."""

from __future__ import annotations

import argparse
import sys


def _threads(args) -> None:
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def register(sub: argparse._SubParsersAction) -> None:
    from gatelab.lm.train import LMConfig

    d = LMConfig()
    lm = sub.add_parser(
        "lm",
        help="RNN language models with BlackOut, NCE, importance sampling or full softmax",
        description="Train, evaluate and sample RNN language models (BlackOut, Ji et al. ICLR 2016).",
    )
    cmds = lm.add_subparsers(dest="lm_command", metavar="SUBCOMMAND", parser_class=sub._parser_class)

    t = cmds.add_parser(
        "train",
        help="train a language model on a tokenised text (or 'ptb')",
        description="Train on CORPUS: a tokenised text file, one sentence a line, or 'ptb'. "
        "Writes model.safetensors, config.json, vocab.json and history.json to --out.",
    )
    t.add_argument("corpus", metavar="CORPUS")
    t.add_argument("--valid", help="validation text (default for ptb: its valid split)")
    t.add_argument("--test", help="test text, evaluated at the end (default for ptb: its test split)")
    t.add_argument("--out", required=True, help="folder for the trained model")
    t.add_argument(
        "--loss",
        default=d.loss,
        choices=("softmax", "blackout", "nce", "is"),
        help=f"output layer / training loss (default: {d.loss})",
    )
    t.add_argument("--samples", "-k", type=int, default=d.samples, help=f"K samples per step (default: {d.samples})")
    t.add_argument("--alpha", type=float, default=d.alpha, help=f"proposal q ∝ unigram^alpha (default: {d.alpha})")
    t.add_argument("--cell", default=d.cell, choices=("rnn", "lstm"), help="sigmoid RNN (paper) or LSTM")
    t.add_argument("--hidden", type=int, default=d.hidden, help=f"hidden size (default: {d.hidden})")
    t.add_argument("--embed", type=int, default=None, help="embedding size (default: the hidden size)")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help=f"parallel streams (default: {d.batch_size})")
    t.add_argument("--bptt", type=int, default=d.bptt, help=f"truncated BPTT steps (default: {d.bptt})")
    t.add_argument("--epochs", type=int, default=d.epochs, help=f"(default: {d.epochs})")
    t.add_argument("--lr", type=float, default=d.lr, help=f"RMSProp learning rate (default: {d.lr})")
    t.add_argument("--rmsprop-decay", type=float, default=d.rmsprop_decay)
    t.add_argument("--rmsprop-eps", type=float, default=d.rmsprop_eps)
    t.add_argument("--clip", type=float, default=d.clip, help=f"gradient norm clipping (default: {d.clip})")
    t.add_argument(
        "--lr-decay", type=float, default=d.lr_decay, help="lr factor after an epoch that improved validation"
    )
    t.add_argument(
        "--lr-plateau-decay",
        type=float,
        default=d.lr_plateau_decay,
        help="lr factor after an epoch that did not improve validation",
    )
    t.add_argument("--min-count", type=int, default=1, help="words seen fewer times become <unk>")
    t.add_argument("--max-vocab", type=int, default=None, help="keep only the most frequent words")
    t.add_argument("--max-train-words", type=int, default=None, help="train on this prefix of the corpus only")
    t.add_argument("--exclude-unk", action="store_true", help="do not count <unk> targets in perplexity")
    t.add_argument("--no-reset", action="store_true", help="carry the state across sentence boundaries")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    e = cmds.add_parser(
        "eval",
        help="exact perplexity of a trained model on a text",
        description="Exact full-softmax perplexity of MODEL on TEXT (a file, or 'ptb' with --split).",
    )
    e.add_argument("model", metavar="MODEL", help="folder written by `gatelab lm train`")
    e.add_argument("text", metavar="TEXT")
    e.add_argument("--split", default="test", choices=("train", "valid", "test"), help="PTB split when TEXT is ptb")
    e.add_argument("--vocab", help="a vocab.json the model must match")
    e.add_argument("--exclude-unk", action="store_true", help="do not count <unk> targets")
    e.add_argument("--device", default="cpu")
    e.add_argument("--threads", type=int, default=None)
    e.set_defaults(func=_eval)

    s = cmds.add_parser(
        "sample",
        help="generate text from a trained model",
        description="Sample words from MODEL's exact softmax, one sentence a line.",
    )
    s.add_argument("model", metavar="MODEL")
    s.add_argument("--words", type=int, default=50, help="how many words (default: 50)")
    s.add_argument("--prime", default="", help="start of the first sentence")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=_sample)
    lm.set_defaults(func=lambda args: (lm.print_help(), 2)[1])


def _train(args) -> int:
    import time

    from gatelab.files import write_json
    from gatelab.lm.corpus import load_corpus
    from gatelab.lm.train import LMConfig, evaluate, save_model, train, unigram_perplexity

    _threads(args)
    config = LMConfig(
        loss=args.loss,
        samples=args.samples,
        alpha=args.alpha,
        cell=args.cell,
        hidden=args.hidden,
        embed=args.embed,
        batch_size=args.batch_size,
        bptt=args.bptt,
        epochs=args.epochs,
        lr=args.lr,
        rmsprop_decay=args.rmsprop_decay,
        rmsprop_eps=args.rmsprop_eps,
        clip=args.clip,
        lr_decay=args.lr_decay,
        lr_plateau_decay=args.lr_plateau_decay,
        include_unk=not args.exclude_unk,
        reset_at_eos=not args.no_reset,
        max_train_words=args.max_train_words,
        seed=args.seed,
        device=args.device,
    )
    config.validate()
    corpus = load_corpus(args.corpus, args.valid, args.test, min_count=args.min_count, max_vocab=args.max_vocab)
    config.validate(len(corpus.vocab))
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    n_train = corpus.train.numel() - 1
    if config.max_train_words is not None:
        n_train = min(n_train, config.max_train_words)
    log(
        f"vocabulary {len(corpus.vocab):,} words, {n_train:,} training targets; "
        f"loss {config.loss}" + (f", K={config.samples}, alpha={config.alpha}" if config.loss != "softmax" else "")
    )
    start = time.perf_counter()
    model, history = train(corpus, config, quiet=args.quiet, log=log)
    summary = {"train_seconds": time.perf_counter() - start, "history": history}
    unk = dict(include_unk=config.include_unk, unk_id=corpus.vocab.unk_id)
    for name in ("valid", "test"):
        ids = getattr(corpus, name)
        if ids is not None:
            summary[f"{name}_ppl"] = evaluate(model, ids, **unk)["ppl"]
            summary[f"{name}_unigram_ppl"] = unigram_perplexity(corpus.vocab, ids, config.include_unk)
    save_model(model, corpus.vocab, config, args.out)
    write_json(f"{args.out}/history.json", summary)
    print(f"model: {args.out}")
    words = sum(h["words"] for h in history)
    seconds = sum(h["seconds"] for h in history)
    print(
        f"trained {len(history)} epoch(s), {words:,} words in {seconds:.1f} s of training "
        f"({words / seconds:,.0f} words/s); {summary['train_seconds']:.1f} s with validation"
    )
    for name in ("valid", "test"):
        if f"{name}_ppl" in summary:
            print(
                f"{name} perplexity {summary[f'{name}_ppl']:.2f} (unigram {summary[f'{name}_unigram_ppl']:.1f}; "
                f"<unk> targets {'counted' if config.include_unk else 'excluded'})"
            )
    return 0


def _eval(args) -> int:
    from gatelab.lm.corpus import encode_file, resolve_text
    from gatelab.lm.train import evaluate, load_model
    from gatelab.lm.vocab import Vocab

    _threads(args)
    vocab = Vocab.load(args.vocab) if args.vocab else None
    model, vocab, config = load_model(args.model, vocab=vocab, device=args.device)
    ids = encode_file(resolve_text(args.text, args.split), vocab)
    res = evaluate(model, ids, include_unk=not args.exclude_unk, unk_id=vocab.unk_id)
    print(
        f"perplexity {res['ppl']:.2f} over {res['words']:,} targets "
        f"(<unk> {'excluded' if args.exclude_unk else 'counted'}, </s> counted)"
    )
    return 0


def _sample(args) -> int:
    from gatelab.lm.train import generate, load_model

    model, vocab, _ = load_model(args.model, device=args.device)
    words = generate(model, vocab, words=args.words, prime=args.prime, temperature=args.temperature, seed=args.seed)
    line = args.prime.split()
    for w in words:
        if w == "</s>":
            print(" ".join(line))
            line = []
        else:
            line.append(w)
    if line:
        print(" ".join(line))
    return 0
