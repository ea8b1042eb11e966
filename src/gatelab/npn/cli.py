"""``gatelab npn train``: grow or prune an MLP or LeNet-5 on MNIST with a plastic network."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from gatelab.data import IMAGE_DATASETS
    from gatelab.gates.cli import _floats
    from gatelab.npn.train import NPN_MODELS, NPNConfig

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
        "the log, plots, the gated weights and the exported compact model into --out.",
    )
    t.add_argument("--model", choices=NPN_MODELS, default=d.model, help=f"network (default: {d.model})")
    t.add_argument("--dataset", choices=IMAGE_DATASETS, default=d.dataset, help=f"data set (default: {d.dataset})")
    t.add_argument(
        "--init-active",
        type=float,
        default=d.init_active,
        help="fraction of units active at the start, in (0, 1]: 1 prunes, e.g. 0.1 expands (default: 1)",
    )
    t.add_argument(
        "--k",
        type=float,
        default=d.k,
        help=f"gate slope in the plastic stage: 0 is dropout, large is ordinary training (default: {d.k})",
    )
    t.add_argument(
        "--lambda",
        dest="lam",
        type=_floats,
        default=None,
        help="L0 strength per N examples, one number or one per gated layer (default: the paper's)",
    )
    t.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default: {d.epochs})")
    t.add_argument(
        "--plastic-from",
        type=int,
        default=d.plastic_from,
        help=f"first epoch of the plastic stage (default: {d.plastic_from})",
    )
    t.add_argument(
        "--harden-from",
        type=int,
        default=d.harden_from,
        help=f"first epoch of the hardening stage (default: {d.harden_from})",
    )
    t.add_argument(
        "--expand-fill",
        type=float,
        default=None,
        help="fraction of hibernating units woken when validation error improves (default: 0.1 when "
        "expanding, 0 when pruning)",
    )
    t.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default: {d.lr})")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help=f"batch size (default: {d.batch_size})")
    t.add_argument("--train-examples", type=int, default=None, help="use only the first N training images")
    t.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default: {d.seed})")
    t.add_argument("--out", default="npn-run", help="output folder (default: npn-run)")
    t.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    t.set_defaults(func=_train)


def _train(args) -> int:
    from dataclasses import asdict
    from pathlib import Path

    import torch
    from safetensors.torch import save_model

    from gatelab.files import atomic_path, write_json
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
        lr=args.lr,
        batch_size=args.batch_size,
        train_examples=args.train_examples,
        seed=args.seed,
    )
    out = Path(args.out)
    model, log = fit_npn(config, progress=None if args.quiet else print)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(config.resolved()))
    write_json(out / "log.json", asdict(log))
    with atomic_path(out / "gated.safetensors") as tmp:
        save_model(model, str(tmp))
    small = export(model)
    with atomic_path(out / "exported.pt") as tmp:
        torch.jit.save(torch.jit.trace(small, torch.zeros(1, 1, 28, 28)), str(tmp))
    for name, fig in (
        ("active_units.png", active_units_figure({args.model: log})),
        ("transition_rate.png", transition_rate_figure({args.model: log})),
    ):
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    print(summary(model))
    print(f"test error   {log.val_error[-1]:.2f}%   active {log.architecture()}   outputs in {out}")
    return 0
