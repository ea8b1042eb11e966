"""Is a pruned network's error gap its architecture or its weights? Train the exported network further and see.

    python tools/finetune_exported.py MODEL [...] [--epochs 10] [--lr 1e-4]

MODEL is a `gatelab gates train` model (OUT.safetensors) or an NPN training
checkpoint (`gatelab npn train`'s checkpoint.pt, or a reproduction's
checkpoints/*.pt). The network is exported with its test-time gates, then its
weights are trained on the run's own training split (plain cross-entropy, Adam,
batch 128: gatelab.training.fit_classifier), and its error on the run's
validation split is printed after every epoch; the test split is not read. If
the error stays where it was, more training of these weights does not close
the gap: the architecture (and the solution the gates settled in) sets it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from gatelab.checkpoint import load_state
from gatelab.evaluation import classifier_scores
from gatelab.gates import build_model, export
from gatelab.gates.train import load_checkpoint, training_data
from gatelab.npn import make_plastic
from gatelab.npn.plasticity import FORMAT as NPN_FORMAT
from gatelab.npn.plasticity import K_HARD, set_k
from gatelab.npn.train import NPNConfig, training_splits
from gatelab.training import fit_classifier


def gated_model(path: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """The trained gated network in ``path`` and its run's ``(x, y, x_val, y_val)``."""
    if not path.endswith(".pt"):
        model, config = load_checkpoint(path)
        return model, training_data(config)
    state = load_state(path, "NPN training checkpoint")
    if state.get("format") != NPN_FORMAT or state["config"].get("dense"):
        raise SystemExit(f"{path} is not the checkpoint of a plastic NPN network")
    fields = NPNConfig.__dataclass_fields__
    config = NPNConfig(**{k: v for k, v in state["config"].items() if k in fields}).resolved()
    model = build_model(config.model)
    make_plastic(model, init_active=config.init_active, k=config.k, lam=config.lam, logits=config.logits)
    (x, y), (xv, yv) = training_splits(config)
    model(x[:1])  # records the input shape, as training did
    model.load_state_dict(state["model"])
    set_k(model, K_HARD)  # every gate decided, as after hardening
    return model, (x, y, xv, yv)


@dataclass
class FinetuneConfig:
    """What ``fit_classifier`` reads: epochs, Adam's step and the batch size."""

    epochs: int
    lr: float
    batch_size: int = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="gates models (.safetensors) or NPN training checkpoints (.pt)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of further training (default: 10)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam's step (default: 1e-4)")
    args = parser.parse_args()
    config = FinetuneConfig(args.epochs, args.lr)
    for path in args.models:
        model, (x, y, xv, yv) = gated_model(path)
        small = export(model).requires_grad_(True)
        before = classifier_scores(small, xv, yv)["error"]
        history = fit_classifier("finetune", config, small, (x, y), (xv, yv), quiet=True)
        errors = ", ".join(f"{h['epoch']}: {h['validation_error']:.2f}%" for h in history)
        parameters = sum(p.numel() for p in small.parameters())
        print(f"{path} ({parameters:,} parameters), validation error: exported {before:.2f}%, {errors}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.manual_seed(0)
    main()
