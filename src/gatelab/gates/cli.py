"""``gatelab gates``: train a gated classifier, summarise a checkpoint, export it smaller."""

from __future__ import annotations

import argparse

from gatelab.gates.estimators import ESTIMATORS, GATE_FUNCTIONS


def _floats(text: str) -> float | list[float]:
    """'0.1' or '10,0.5,0.1,10' (one per gated layer)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def register(sub: argparse._SubParsersAction) -> None:
    from gatelab.data import IMAGE_DATASETS
    from gatelab.gates.api import GRANULARITIES
    from gatelab.gates.models import MODELS
    from gatelab.gates.train import TrainConfig

    d = TrainConfig()
    gates = sub.add_parser(
        "gates",
        help="L0 gates (L0-ARM, hard concrete): sparsify, train, export",
        description="Stochastic binary gates with an L0 penalty (Li & Ji, L0-ARM; Louizos et al.).",
    )
    cmds = gates.add_subparsers(dest="gates_command", metavar="COMMAND", required=True)

    t = cmds.add_parser(
        "train",
        help="train a gated MLP, LeNet-5-Caffe or ResNet on MNIST/Fashion-MNIST",
        description="Train a gated classifier with the papers' settings and save a checkpoint "
        "(safetensors, config in its metadata, plus CHECKPOINT.json).",
    )
    t.add_argument("--model", choices=sorted(MODELS), default=d.model, help=f"network (default: {d.model})")
    t.add_argument("--dataset", choices=IMAGE_DATASETS, default=d.dataset, help=f"data set (default: {d.dataset})")
    t.add_argument(
        "--estimator",
        choices=sorted(ESTIMATORS),
        default=d.estimator,
        help=f"gradient estimator of the gates (default: {d.estimator})",
    )
    t.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        default=d.granularity,
        help="what a gate switches: weight, neuron (Linear inputs), channel (Conv2d outputs) "
        "or structured (both; default)",
    )
    t.add_argument(
        "--lam",
        type=_floats,
        default=None,
        help="L0 strength per N examples: one number or one per gated layer "
        "(default: the paper's, e.g. 0.1,0.1,0.1 for mlp and 10,0.5,0.1,10 for lenet5)",
    )
    t.add_argument("--keep-prob", type=_floats, default=None, help="initial P(gate open) (default: the paper's)")
    t.add_argument(
        "--gate-function",
        choices=sorted(GATE_FUNCTIONS),
        default=d.gate_function,
        help=f"g(phi) for Bernoulli gates (default: {d.gate_function})",
    )
    t.add_argument("--k", type=float, default=d.k, help=f"slope k of g(phi) = sigmoid(k phi) (default: {d.k})")
    t.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default: {d.epochs}, the paper's)")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help=f"batch size (default: {d.batch_size})")
    t.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default: {d.lr})")
    t.add_argument("--train-examples", type=int, default=None, help="use only the first N training images")
    t.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default: {d.seed})")
    t.add_argument("--device", default=d.device, help="torch device, e.g. cpu or cuda (default: cpu)")
    t.add_argument("--out", default="gated.safetensors", help="checkpoint path (default: gated.safetensors)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    s = cmds.add_parser("summary", help="kept gates per layer, parameters and FLOPs of a checkpoint")
    s.add_argument("checkpoint", help="a checkpoint written by `gatelab gates train`")
    s.set_defaults(func=_summary)

    e = cmds.add_parser(
        "export",
        help="write the pruned model, units physically removed, as TorchScript",
        description="Export a checkpoint to a plain model with pruned neurons and channels removed, "
        "saved as TorchScript (torch.jit.load reads it without gatelab).",
    )
    e.add_argument("checkpoint", help="a checkpoint written by `gatelab gates train`")
    e.add_argument("--out", required=True, help="output .pt path")
    e.set_defaults(func=_export)


def _train(args) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from gatelab.files import write_json
    from gatelab.gates.export import summary
    from gatelab.gates.train import TrainConfig, fit, save_checkpoint

    config = TrainConfig(
        model=args.model,
        dataset=args.dataset,
        granularity=args.granularity,
        estimator=args.estimator,
        lam=args.lam,
        keep_prob=args.keep_prob,
        gate_function=args.gate_function,
        k=args.k,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        train_examples=args.train_examples,
        seed=args.seed,
        device=args.device,
    ).validate()
    model, history = fit(config, progress=not args.quiet)
    path = save_checkpoint(model.cpu(), config, args.out)
    write_json(Path(f"{path}.json"), {"config": asdict(config), "history": asdict(history)})
    print(summary(model))
    print(f"test error   {history.test_error[-1]:.2f}% after {config.epochs} epochs")
    print(f"checkpoint   {path}")
    return 0


def _summary(args) -> int:
    from gatelab.gates.export import summary
    from gatelab.gates.train import load_checkpoint

    model, config = load_checkpoint(args.checkpoint)
    print(f"{config.model} on {config.dataset}, {config.estimator} gates ({config.granularity})")
    print(summary(model))
    return 0


def _export(args) -> int:
    import torch

    from gatelab.files import atomic_path
    from gatelab.gates.export import export
    from gatelab.gates.train import load_checkpoint

    model, _ = load_checkpoint(args.checkpoint)
    small = export(model)
    scripted = torch.jit.trace(small, torch.zeros(1, 1, 28, 28))
    with atomic_path(args.out) as tmp:
        torch.jit.save(scripted, str(tmp))
    print(f"exported {sum(p.numel() for p in small.parameters()):,} parameters to {args.out}")
    return 0
