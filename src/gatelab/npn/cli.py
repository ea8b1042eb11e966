"""``gatelab npn train``: grow or prune an MLP or LeNet-5 on MNIST with a plastic network."""

from __future__ import annotations

import argparse

from gatelab.checkpoint import checkpoint_beside


def register(sub: argparse._SubParsersAction) -> None:
    from gatelab.data import IMAGE_DATASETS
    from gatelab.npn.plasticity import TRIGGERS
    from gatelab.npn.train import NPN_MODELS, NPNConfig
    from gatelab.options import (
        add_training,
        float_list,
        fraction,
        nonnegative_float,
        positive_float,
        positive_int,
        unit_interval,
    )

    d = NPNConfig()
    npn = sub.add_parser(
        "npn",
        help="Neural Plasticity Networks: grow or prune a network with one parameter k",
        description="Neural Plasticity Networks (Li & Ji, arXiv:1908.08118).",
    )
    cmds = npn.add_subparsers(dest="npn_command", metavar="COMMAND", required=True)
    t = cmds.add_parser(
        "train",
        help="train a plastic MLP or LeNet-5 on MNIST/Fashion-MNIST",
        description="Train with the three-stage k schedule (ordinary, plastic, hardening) and write "
        "the log, plots, the gated weights, the exported compact model and the last training checkpoint "
        "into --out. Choices during training read a validation split of the training images; the test "
        "split is read once, at the end. While training, the checkpoint is kept beside --out as "
        "OUT.checkpoint.pt.",
    )
    t.add_argument("--model", choices=NPN_MODELS, default=d.model, help=f"network (default: {d.model})")
    t.add_argument("--dataset", choices=IMAGE_DATASETS, default=d.dataset, help=f"data set (default: {d.dataset})")
    t.add_argument(
        "--init-active",
        type=fraction,
        default=d.init_active,
        help="fraction of units active at the start, in (0, 1]: 1 prunes, e.g. 0.1 expands "
        f"(default: {d.init_active:g})",
    )
    t.add_argument(
        "--k",
        type=nonnegative_float,
        default=d.k,
        help=f"gate slope in the plastic stage: 0 is dropout, large is ordinary training (default: {d.k:g})",
    )
    t.add_argument(
        "--lam",
        type=float_list,
        default=None,
        help="L0 strength per N examples, one number >= 0 or one per gated layer, comma-separated "
        "(default: the L0-ARM paper's per-layer values)",
    )
    t.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"epochs (default: {d.epochs})")
    t.add_argument(
        "--plastic-from",
        type=positive_int,
        default=d.plastic_from,
        help=f"first epoch of the plastic stage (default: {d.plastic_from})",
    )
    t.add_argument(
        "--harden-from",
        type=positive_int,
        default=d.harden_from,
        help=f"first epoch of the hardening stage (default: {d.harden_from})",
    )
    t.add_argument(
        "--expand-fill",
        type=unit_interval,
        default=d.expand_fill,
        help="when expanding, wake this fraction of the hibernating units at each trigger instead of the "
        f"authors' one unit a layer (default: {d.expand_fill:g}: one unit)",
    )
    t.add_argument(
        "--trigger",
        choices=TRIGGERS,
        default=d.trigger,
        help="expansion trigger: an improving validation loss plus regularizer (the authors') or "
        f"validation error (default: {d.trigger})",
    )
    t.add_argument(
        "--weight-decay",
        type=nonnegative_float,
        default=d.weight_decay,
        help="gated expected-L2 weight decay (default: the authors': 5e-4, divided by the training-set size on "
        "LeNet-5 as their regularizer is)",
    )
    t.add_argument(
        "--lr-decay-at",
        type=positive_int,
        default=d.lr_decay_at,
        help=f"multiply the learning rate by 0.1 from this epoch on (default: {d.lr_decay_at})",
    )
    t.add_argument("--lr", type=positive_float, default=d.lr, help=f"Adam learning rate (default: {d.lr:g})")
    t.add_argument(
        "--batch-size", type=positive_int, default=d.batch_size, help=f"batch size (default: {d.batch_size})"
    )
    t.add_argument(
        "--train-examples",
        type=positive_int,
        default=None,
        help="train on only the first N training images left after the validation split (default: all)",
    )
    t.add_argument(
        "--val-size",
        type=positive_int,
        default=d.val_size,
        help=f"training images held out (seeded) for validation (default: {d.val_size})",
    )
    t.add_argument("--out", default="npn-run", help="output folder (default: npn-run)")
    add_training(t)
    t.set_defaults(func=_train)


def _train(args) -> int:
    import io
    import shutil
    from dataclasses import asdict

    import torch
    from safetensors.torch import save_model

    from gatelab.files import atomic_dir, check_output_path, write_json
    from gatelab.gates import export, summary
    from gatelab.npn.plots import active_units_figure, transition_rate_figure
    from gatelab.npn.train import NPNConfig, fit_npn

    config = NPNConfig(
        model=args.model,
        dataset=args.dataset,
        init_active=args.init_active,
        k=args.k,
        lam=args.lam,
        epochs=args.epochs,
        plastic_from=args.plastic_from,
        harden_from=args.harden_from,
        expand_fill=args.expand_fill,
        trigger=args.trigger,
        weight_decay=args.weight_decay,
        lr_decay_at=args.lr_decay_at,
        lr=args.lr,
        batch_size=args.batch_size,
        train_examples=args.train_examples,
        val_size=args.val_size,
        seed=args.seed,
        device=args.device,
    ).resolved()
    out = check_output_path(args.out, kind="dir")
    ckpt = checkpoint_beside(out)
    model, log = fit_npn(
        config,
        quiet=args.quiet,
        log_dir=args.log_dir,
        checkpoint=ckpt,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )
    model.cpu()
    with atomic_dir(out) as tmp:
        write_json(tmp / "config.json", asdict(config))
        write_json(tmp / "log.json", asdict(log))
        save_model(model, str(tmp / "gated.safetensors"))
        buffer = io.BytesIO()  # serialised in memory: torch.jit.save aborts the process on a full disk
        torch.jit.save(torch.jit.trace(export(model), torch.zeros(1, 1, 28, 28)), buffer)
        (tmp / "exported.pt").write_bytes(buffer.getvalue())
        for name, fig in (
            ("active_units.png", active_units_figure({args.model: log})),
            ("transition_rate.png", transition_rate_figure({args.model: log})),
        ):
            fig.savefig(tmp / name, format="png", dpi=120, bbox_inches="tight")
        shutil.copyfile(ckpt if ckpt.is_file() else args.resume, tmp / "checkpoint.pt")  # resumed when finished
    ckpt.unlink(missing_ok=True)
    print(summary(model))
    print(f"test error   {log.test_error:.2f}%   active {log.architecture()}   outputs in {out}")
    return 0
