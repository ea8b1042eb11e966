"""An epoch loop for trainers: shuffled minibatches, checkpoints, resume, progress and scalars.

One loop so that trainers (NICE's classifier and mask network, Defense-VAE's
classifiers and VAE) checkpoint, resume and report the same way. A checkpoint holds the model, the optimiser, the RNG
states, the position (epoch, step, and the epoch's permutation), the partial
sums of the epoch's statistics, the history, the config and whatever the
trainer keeps in ``extra`` (say, the best weights so far), so that with one
thread and a fixed seed a resumed run equals an uninterrupted one exactly.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any, Callable

import torch
from torch import nn

from gatelab.checkpoint import Checkpointer, check_resumable, load_state, rng_state, set_rng_state
from gatelab.errors import GatelabError
from gatelab.progress import ScalarLog, bar, say

# fields of a config that a resumed run may change: train longer, or continue on another device
RESUMABLE_CHANGES = ("epochs", "device")


def train_epochs(
    fmt: str,
    config,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    n: int,
    step: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    *,
    epoch_start: Callable[[int], None] | None = None,
    epoch_end: Callable[[int, dict[str, float]], dict[str, float]] | None = None,
    extra: dict[str, Any] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 300.0,
    resume: str | os.PathLike | None = None,
    quiet: bool = False,
    log_dir: str | os.PathLike | None = None,
    desc: str = "training",
) -> list[dict]:
    """Run ``config.epochs`` epochs of ``step(indices)`` over shuffled minibatches of ``range(n)``; return the history.

    ``step`` trains on one minibatch and returns detached scalar tensors; they are
    summed on the device and read once an epoch (no per-step host sync).
    ``epoch_start(epoch)`` runs before an epoch's first step (not again when a run
    resumes inside it); ``epoch_end(epoch, means)`` returns more numbers for the
    epoch's history entry (a validation error, say). ``extra`` is the trainer's own
    state: saved with every checkpoint and, on resume, updated in place.
    """
    extra = {} if extra is None else extra
    steps_per_epoch = -(-n // config.batch_size)
    pos: dict[str, Any] = {"epoch": 0, "step": 0, "order": None, "sums": {}}
    history: list[dict] = []
    if resume is not None:
        saved = load_state(resume, f"{desc} checkpoint")
        check_resumable(saved, fmt, asdict(config), resume, may_differ=RESUMABLE_CHANGES)
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            pos = {k: saved[k] for k in pos}
            history = list(saved["history"])
            extra.update(saved["extra"])
            rng = saved["rng"]
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise GatelabError(f"{resume} is an incomplete {fmt} checkpoint ({type(exc).__name__}: {exc})") from None
        device = next(model.parameters()).device
        pos["sums"] = {k: v.to(device) for k, v in pos["sums"].items()}
        set_rng_state(rng)
        say(f"{desc}: resuming {resume} at epoch {pos['epoch'] + 1}, step {pos['step']}", quiet)

    def state() -> dict:
        return {
            "format": fmt,
            "config": asdict(config),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(),
            **pos,
            "history": history,
            "extra": extra,
        }

    done = pos["epoch"] * steps_per_epoch + pos["step"]
    progress = bar(total=config.epochs * steps_per_epoch, desc=desc, unit="step", quiet=quiet, initial=done)
    with Checkpointer(checkpoint, checkpoint_every) as ckpt, ScalarLog(log_dir) as scalars, progress:
        while pos["epoch"] < config.epochs:
            epoch = pos["epoch"]
            if pos["order"] is None:
                if epoch_start is not None:
                    epoch_start(epoch)
                pos["order"], pos["step"], pos["sums"] = torch.randperm(n), 0, {}
            model.train()
            batches = pos["order"].split(config.batch_size)
            while pos["step"] < len(batches):
                stats = step(batches[pos["step"]])
                for key, value in stats.items():
                    pos["sums"][key] = pos["sums"].get(key, 0) + value.detach()
                pos["step"] += 1
                progress.update()
                ckpt.step(state)
            means = {k: float(v) / steps_per_epoch for k, v in pos["sums"].items()}  # the epoch's one sync
            if epoch_end is not None:
                means.update(epoch_end(epoch, means))
            history.append({"epoch": epoch + 1, **means})
            pos.update(epoch=epoch + 1, step=0, order=None, sums={})
            scalars.add(epoch + 1, **means)
            say(
                f"{desc} epoch {epoch + 1}/{config.epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in means.items()),
                quiet,
            )
            ckpt.epoch_end(state)
    return history


def fit_classifier(
    fmt: str,
    config,
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    desc: str = "classifier",
    **trainer,
) -> list[dict]:
    """Cross-entropy with Adam(``config.lr``) on ``train`` through ``train_epochs``; keep the best validation epoch.

    The model ends with the weights of the epoch with the lowest error on
    ``val`` (data on the model's device); that choice is checkpointed and
    resumed with the rest. ``trainer`` takes ``train_epochs``' keywords
    (checkpoint, checkpoint_every, resume, quiet, log_dir). Returns the history.
    """
    from gatelab.evaluation import classifier_scores

    (x, y), (xv, yv) = train, val
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

    def step(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        idx = idx.to(x.device)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    best = {"error": float("inf"), "epoch": 0, "weights": None}

    def epoch_end(epoch: int, _means: dict) -> dict:
        error = classifier_scores(model, xv, yv)["error"]
        if error < best["error"]:
            weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best.update(error=error, epoch=epoch + 1, weights=weights)
        return {"validation_error": error, "validation_accuracy": 1 - error / 100}

    history = train_epochs(
        fmt, config, model, optimizer, len(x), step, epoch_end=epoch_end, extra=best, desc=desc, **trainer
    )
    model.load_state_dict(best["weights"])
    say(f"{desc}: keeping epoch {best['epoch']}, validation error {best['error']:.2f}%", trainer.get("quiet", False))
    return history
