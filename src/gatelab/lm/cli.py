"""``gatelab lm``: train, evaluate and sample RNN language models.

``lm train`` writes its output folder atomically (under a temporary name,
renamed when complete), so a failure leaves no half-filled folder. While it
trains, its checkpoint lives beside that folder, at ``OUT.checkpoint.pt``: it is
saved at each epoch's end and every ``--checkpoint-every`` seconds, Ctrl-C or
SIGTERM saves it and says how to resume, ``--resume OUT.checkpoint.pt``
continues from it, and it is removed once the folder is complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gatelab.checkpoint import checkpoint_beside
from gatelab.options import (
    add_common,
    add_training,
    count_or_fraction,
    finite_float,
    nonnegative_float,
    positive_float,
    positive_int,
    probability,
    unit_interval,
)


def _threads(args) -> None:
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def register(sub: argparse._SubParsersAction) -> None:
    from gatelab.lm.output import LOSSES
    from gatelab.lm.train import CELLS, LMConfig

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
        description="Train on CORPUS: a tokenised text file, one sentence a line, or 'ptb'. Writes "
        "model.safetensors, config.json, vocab.json and history.json to the folder --out, atomically; "
        "while training, the checkpoint for --resume is OUT.checkpoint.pt beside it.",
    )
    t.add_argument("corpus", metavar="CORPUS", help="a tokenised text file (one sentence a line) or 'ptb'")
    t.add_argument(
        "--valid",
        help="validation text for the learning-rate schedule and the best epoch (default: PTB's valid "
        "split for ptb; otherwise a seeded split of the training text, see --val-size)",
    )
    t.add_argument(
        "--val-size",
        type=count_or_fraction,
        default=0.05,
        help="without --valid: training sentences held out for validation, a count or a fraction (default: 0.05)",
    )
    t.add_argument(
        "--test",
        help="test text, read once after training for the final number (default: PTB's test split for ptb; "
        "otherwise none)",
    )
    t.add_argument("--out", required=True, help="folder for the trained model (required)")
    t.add_argument("--loss", default=d.loss, choices=LOSSES, help=f"output layer / training loss (default: {d.loss})")
    t.add_argument(
        "--samples", "-k", type=positive_int, default=d.samples, help=f"K samples per step (default: {d.samples})"
    )
    t.add_argument(
        "--alpha", type=unit_interval, default=d.alpha, help=f"proposal q ∝ unigram^alpha (default: {d.alpha})"
    )
    t.add_argument("--cell", default=d.cell, choices=CELLS, help=f"sigmoid RNN (paper) or LSTM (default: {d.cell})")
    t.add_argument("--hidden", type=positive_int, default=d.hidden, help=f"hidden size (default: {d.hidden})")
    t.add_argument("--embed", type=positive_int, default=None, help="embedding size (default: the hidden size)")
    t.add_argument(
        "--batch-size", type=positive_int, default=d.batch_size, help=f"parallel streams (default: {d.batch_size})"
    )
    t.add_argument("--bptt", type=positive_int, default=d.bptt, help=f"truncated BPTT steps (default: {d.bptt})")
    t.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"training epochs (default: {d.epochs})")
    t.add_argument("--lr", type=positive_float, default=d.lr, help=f"RMSProp learning rate (default: {d.lr})")
    t.add_argument(
        "--rmsprop-decay",
        type=probability,
        default=d.rmsprop_decay,
        help=f"RMSProp decay of the squared-gradient average (default: {d.rmsprop_decay})",
    )
    t.add_argument(
        "--rmsprop-eps", type=positive_float, default=d.rmsprop_eps, help=f"RMSProp epsilon (default: {d.rmsprop_eps})"
    )
    t.add_argument(
        "--clip",
        type=nonnegative_float,
        default=d.clip,
        help=f"gradient norm clipping; 0 turns clipping off (default: {d.clip})",
    )
    t.add_argument(
        "--lr-decay",
        type=positive_float,
        default=d.lr_decay,
        help=f"lr factor after an epoch that improved validation perplexity (default: {d.lr_decay})",
    )
    t.add_argument(
        "--lr-plateau-decay",
        type=positive_float,
        default=d.lr_plateau_decay,
        help=f"lr factor after an epoch that did not improve validation perplexity (default: {d.lr_plateau_decay})",
    )
    t.add_argument(
        "--nce-log-z",
        type=finite_float,
        default=d.nce_log_z,
        help=f"NCE's log normaliser, fixed or the start of a learned one (default: {d.nce_log_z})",
    )
    t.add_argument(
        "--nce-learn-z", action="store_true", help="learn NCE's log normaliser as a parameter (default: fixed)"
    )
    t.add_argument("--min-count", type=positive_int, default=1, help="words seen fewer times become <unk> (default: 1)")
    t.add_argument(
        "--max-vocab", type=positive_int, default=None, help="keep only the most frequent words (default: all)"
    )
    t.add_argument(
        "--max-train-words",
        type=positive_int,
        default=None,
        help="train on this prefix of the training text only (default: all of it)",
    )
    t.add_argument(
        "--exclude-unk", action="store_true", help="do not count <unk> targets in perplexity (default: they count)"
    )
    t.add_argument(
        "--no-reset",
        action="store_true",
        help="carry the state across sentence boundaries (default: reset at each </s>)",
    )
    t.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    add_training(t)
    t.set_defaults(func=_train)

    e = cmds.add_parser(
        "eval",
        help="exact perplexity of a trained model on a text",
        description="Exact full-softmax perplexity of MODEL on TEXT (a file, or 'ptb' with --split).",
    )
    e.add_argument("model", metavar="MODEL", help="folder written by `gatelab lm train`")
    e.add_argument("text", metavar="TEXT", help="a tokenised text file, or 'ptb'")
    e.add_argument(
        "--split", default="test", choices=("train", "valid", "test"), help="PTB split when TEXT is ptb (default: test)"
    )
    e.add_argument("--vocab", help="a vocab.json the model must match (default: no check beyond the model's own)")
    e.add_argument("--exclude-unk", action="store_true", help="do not count <unk> targets (default: they count)")
    e.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    add_common(e, seed=False)
    e.set_defaults(func=_eval)

    s = cmds.add_parser(
        "sample",
        help="generate text from a trained model",
        description="Sample words from MODEL's exact softmax, one sentence a line.",
    )
    s.add_argument("model", metavar="MODEL", help="folder written by `gatelab lm train`")
    s.add_argument("--words", type=positive_int, default=50, help="how many words (default: 50)")
    s.add_argument("--prime", default="", help="start of the first sentence (default: none)")
    s.add_argument(
        "--temperature", type=positive_float, default=1.0, help="softmax temperature; < 1 is greedier (default: 1.0)"
    )
    add_common(s)
    s.set_defaults(func=_sample)
    lm.set_defaults(func=lambda args: (lm.print_help(), 2)[1])


def _train(args) -> int:
    import time

    from gatelab.errors import GatelabError
    from gatelab.files import atomic_dir, check_output_path, write_json
    from gatelab.lm.corpus import encode_test, load_corpus
    from gatelab.lm.train import LMConfig, evaluate, save_model, train, unigram_perplexity
    from gatelab.progress import say

    out = check_output_path(args.out, kind="dir")
    ckpt = checkpoint_beside(out)
    check_output_path(ckpt, kind="file")
    for name in ("valid", "test"):  # a missing file is refused now, not after training
        spec = getattr(args, name)
        if spec and spec.lower() != "ptb" and not Path(spec).is_file():
            raise GatelabError(f"--{name} {spec} does not exist; give a text file with one sentence a line")
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
        nce_log_z=args.nce_log_z,
        nce_learn_z=args.nce_learn_z,
        include_unk=not args.exclude_unk,
        reset_at_eos=not args.no_reset,
        max_train_words=args.max_train_words,
        seed=args.seed,
        device=args.device,
    )
    config.validate()
    corpus = load_corpus(
        args.corpus,
        args.valid,
        min_count=args.min_count,
        max_vocab=args.max_vocab,
        val_size=args.val_size,
        seed=args.seed,
        read_test=False,
    )
    config.validate(len(corpus.vocab))
    n_train = corpus.train.numel() - 1
    if config.max_train_words is not None:
        n_train = min(n_train, config.max_train_words)
    say(
        f"vocabulary {len(corpus.vocab):,} words, {n_train:,} training targets; validation: {corpus.valid_source}; "
        f"loss {config.loss}" + (f", K={config.samples}, alpha={config.alpha}" if config.loss != "softmax" else ""),
        args.quiet,
    )
    start = time.perf_counter()
    model, history = train(
        corpus,
        config,
        quiet=args.quiet,
        checkpoint=Path(args.resume) if args.resume else ckpt,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        log_dir=args.log_dir,
    )
    summary = {"train_seconds": time.perf_counter() - start, "history": history, "validation": corpus.valid_source}
    unk = dict(include_unk=config.include_unk, unk_id=corpus.vocab.unk_id)
    texts = {"valid": corpus.valid, "test": encode_test(args.corpus, args.test, corpus.vocab)}  # test: read once, now
    for name, ids in texts.items():
        if ids is not None:
            summary[f"{name}_ppl"] = evaluate(model, ids, **unk)["ppl"]
            summary[f"{name}_unigram_ppl"] = unigram_perplexity(corpus.vocab, ids, config.include_unk)
    with atomic_dir(out) as tmp:
        save_model(model, corpus.vocab, config, tmp, extra={"validation": corpus.valid_source})
        write_json(tmp / "history.json", summary)
    for used in {ckpt, Path(args.resume) if args.resume else ckpt}:
        used.unlink(missing_ok=True)
    print(f"model: {out}")
    words = sum(h["words"] for h in history)
    seconds = sum(h["seconds"] for h in history)
    print(
        f"trained {len(history)} epoch(s), {words:,} words in {seconds:.1f} s of training "
        f"({words / max(seconds, 1e-9):,.0f} words/s); {summary['train_seconds']:.1f} s with validation"
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
