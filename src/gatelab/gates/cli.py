"""``gatelab gates``: train a gated classifier, summarise a checkpoint, export it smaller."""

from __future__ import annotations

import argparse

from gatelab.checkpoint import checkpoint_beside
from gatelab.gates.estimators import ESTIMATORS, GATE_FUNCTIONS
from gatelab.options import (
    add_training,
    float_list,
    nonnegative_float,
    positive_float,
    positive_int,
    unit_interval,
)


def register(sub: argparse._SubParsersAction) -> None:
    from gatelab.data import IMAGE_DATASETS
    from gatelab.gates.api import GRANULARITIES
    from gatelab.gates.models import MODELS, WEIGHT_INITS
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
        description="Train a gated classifier with the papers' settings and save it (safetensors, config in "
        "its metadata, plus OUT.json with the history). A validation split carved from the training images "
        "is measured every epoch; the test split is read once, at the end. The training checkpoint "
        "OUT.checkpoint.pt is saved every epoch and every --checkpoint-every seconds; --resume continues from it.",
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
        f"or structured (both) (default: {d.granularity})",
    )
    t.add_argument(
        "--lam",
        type=float_list,
        default=None,
        help="L0 strength per N examples, >= 0: one number or one per gated layer "
        "(default: the paper's, e.g. 0.1,0.1,0.1 for mlp and 10,0.5,0.1,10 for lenet5)",
    )
    t.add_argument(
        "--keep-prob",
        type=float_list,
        default=None,
        help="initial P(gate open), in (0, 1): one number or one per gated layer (default: the paper's)",
    )
    t.add_argument(
        "--gate-function",
        choices=sorted(GATE_FUNCTIONS),
        default=d.gate_function,
        help=f"g(phi) for Bernoulli gates (default: {d.gate_function})",
    )
    t.add_argument(
        "--k", type=nonnegative_float, default=d.k, help=f"slope k of g(phi) = sigmoid(k phi) (default: {d.k})"
    )
    t.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"epochs (default: {d.epochs}, the paper's)")
    t.add_argument(
        "--batch-size", type=positive_int, default=d.batch_size, help=f"batch size (default: {d.batch_size})"
    )
    t.add_argument("--lr", type=positive_float, default=d.lr, help=f"Adam learning rate (default: {d.lr})")
    t.add_argument(
        "--weight-decay",
        type=nonnegative_float,
        default=None,
        help="factor of the gated expected-L2 term (weight_decay/2) sum P(open) ||w||^2 "
        "(default: the authors', 5e-4 for mlp, 5e-4/60000 for lenet5, 0 for resnet)",
    )
    t.add_argument(
        "--weight-init",
        choices=WEIGHT_INITS,
        default=d.weight_init,
        help="initial weights: torch (PyTorch's default) or authors (He-normal, zero biases, as the L0 and "
        f"L0-ARM code) (default: {d.weight_init})",
    )
    t.add_argument(
        "--ema",
        type=unit_interval,
        default=d.ema,
        help="decay of the moving average of the weights used for validation, the test and the saved model, "
        f"in [0, 1); 0: the last weights (default: {d.ema})",
    )
    t.add_argument(
        "--eval-every",
        type=positive_int,
        default=d.eval_every,
        help=f"measure the validation split every N epochs, and after the last (default: {d.eval_every})",
    )
    t.add_argument(
        "--train-examples",
        type=positive_int,
        default=None,
        help="train on only the first N training images outside the validation split (default: all of them)",
    )
    t.add_argument(
        "--val-size",
        type=positive_int,
        default=d.val_size,
        help=f"validation images carved from the training split, chosen by --seed (default: {d.val_size})",
    )
    t.add_argument("--out", default="gated.safetensors", help="trained model path (default: gated.safetensors)")
    add_training(t)
    t.set_defaults(func=_train)

    s = cmds.add_parser(
        "summary",
        help="kept gates per layer, parameters and FLOPs of a checkpoint",
        description="Print a checkpoint's kept units per gated layer, its architecture, and its parameters and "
        "multiply-adds (FLOPs) beside the dense network's.",
    )
    s.add_argument("checkpoint", help="a model written by `gatelab gates train`")
    s.set_defaults(func=_summary)

    e = cmds.add_parser(
        "export",
        help="write the pruned model, units physically removed, as TorchScript",
        description="Export a checkpoint to a plain model with pruned neurons and channels removed, "
        "saved as TorchScript (torch.jit.load reads it without gatelab).",
    )
    e.add_argument("checkpoint", help="a model written by `gatelab gates train`")
    e.add_argument("--out", required=True, help="output .pt path (required; no default)")
    e.set_defaults(func=_export)


def _train(args) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from gatelab.files import check_output_path, write_json
    from gatelab.gates.export import summary
    from gatelab.gates.train import TrainConfig, fit, save_checkpoint

    out = check_output_path(args.out)
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
        weight_decay=args.weight_decay,
        weight_init=args.weight_init,
        ema=args.ema,
        eval_every=args.eval_every,
        train_examples=args.train_examples,
        val_size=args.val_size,
        seed=args.seed,
        device=args.device,
    ).validate()
    model, history = fit(
        config,
        checkpoint=checkpoint_beside(out),
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        quiet=args.quiet,
        log_dir=args.log_dir,
    )
    path = save_checkpoint(model.cpu(), config, out)
    write_json(Path(f"{path}.json"), {"config": asdict(config), "history": asdict(history)})
    print(summary(model))
    print(f"validation error {history.val_error[-1]:.2f}% ({config.val_size} images carved from training)")
    print(f"test error       {history.test_error:.2f}% after {config.epochs} epochs")
    print(f"model            {path}")
    print(f"checkpoint       {checkpoint_beside(out)} (continue training with --resume and more --epochs)")
    return 0


def _summary(args) -> int:
    from gatelab.gates.export import summary
    from gatelab.gates.train import load_checkpoint

    model, config = load_checkpoint(args.checkpoint)
    print(f"{config.model} on {config.dataset}, {config.estimator} gates ({config.granularity})")
    print(summary(model))
    return 0


def _export(args) -> int:
    import io

    import torch

    from gatelab.files import check_output_path, write_bytes
    from gatelab.gates.export import export
    from gatelab.gates.train import load_checkpoint

    out = check_output_path(args.out)
    model, _ = load_checkpoint(args.checkpoint)
    small = export(model)
    scripted = torch.jit.trace(small, torch.zeros(1, 1, 28, 28))
    buffer = io.BytesIO()  # serialise in memory: a failing disk then fails in Python, not in a C++ destructor
    torch.jit.save(scripted, buffer)
    write_bytes(out, buffer.getvalue())
    print(f"exported {sum(p.numel() for p in small.parameters()):,} parameters to {out}")
    return 0
