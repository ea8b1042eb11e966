"""Plastic MNIST classifiers with the authors' three-stage schedule, for the CLI and the reproductions.

Every choice made while training (the expansion trigger) reads a seeded validation
split carved from the training images; the test split is read once, after training,
for the final number (``log.test_error``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

import torch

from gatelab.data import IMAGE_DATASETS, image_splits, mnist_tensors
from gatelab.errors import GatelabError, check_choice
from gatelab.evaluation import classifier_scores
from gatelab.gates import PAPER_LAMBDA, PAPER_WEIGHT_DECAY
from gatelab.gates.models import build_model
from gatelab.npn.plasticity import (
    AUTHORS_LOGITS,
    K_HARD,
    TRIGGERS,
    KSchedule,
    PlasticityLog,
    make_plastic,
    train_plastic,
)

NPN_MODELS = ("mlp", "lenet5")


@dataclass
class NPNConfig:
    """A plastic run. Defaults are the authors' LeNet-5 settings (``leo-yangli/npns``, train_lenet.py):
    500 epochs, plasticity from epoch 101 to 350 (k = 7 to prune, ``authors_start`` for k = 1 to
    expand from 3-3-3), hardening after, Adam 1e-3 with lr x0.1 from epoch 401, batch 128, gated
    weight decay 5e-4 (divided by N on LeNet-5, as their regularizer is: ``PAPER_WEIGHT_DECAY``),
    start phi (3/7, -40/7: ``AUTHORS_LOGITS`` at k = 7), and when expanding one unit a layer each
    time the validation loss (plus the regularizer) improves. ``val_size`` training images (seeded
    by ``seed``) are held out for validation; ``train_examples`` then keeps only the first N of the rest."""

    model: str = "lenet5"
    dataset: str = "mnist"
    init_active: float | list[float] = 1.0
    k: float = 7.0
    lam: float | list[float] | None = None  # None: the L0-ARM paper's per-layer values
    epochs: int = 500
    plastic_from: int = 101
    harden_from: int | None = 351
    logits: tuple[float, float] = AUTHORS_LOGITS
    trigger: str = "loss"
    expand_fill: float = 0.0  # > 0: wake this fraction of the hibernating units instead of one unit a layer
    weight_decay: float | None = None  # None: the authors' for the model (gates.PAPER_WEIGHT_DECAY)
    lr_decay_at: int | None = 401
    lr: float = 1e-3
    batch_size: int = 128
    train_examples: int | None = None
    val_size: int = 5000
    seed: int = 0
    device: str = "cpu"

    def resolved(self) -> "NPNConfig":
        """A copy with the mode-dependent defaults filled in, validated."""
        check_choice("model", self.model, NPN_MODELS)
        check_choice("data set", self.dataset, IMAGE_DATASETS)
        fractions = self.init_active if isinstance(self.init_active, (list, tuple)) else [self.init_active]
        if not fractions or not all(isinstance(f, (int, float)) and 0 < f <= 1 for f in fractions):
            raise GatelabError(f"init_active must be a fraction in (0, 1] (or one per layer), got {self.init_active}")
        check_choice("expansion trigger", self.trigger, TRIGGERS)
        for name in ("epochs", "batch_size", "val_size", "train_examples"):
            value = getattr(self, name)
            if name == "train_examples" and value is None:  # None: all of them
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GatelabError(f"{name} must be an integer >= 1, got {value!r}")
        lam = self.lam if self.lam is not None else PAPER_LAMBDA[self.model]  # sparsify checks each value
        decay = PAPER_WEIGHT_DECAY[self.model] if self.weight_decay is None else self.weight_decay
        if not (isinstance(decay, (int, float)) and 0 <= decay < float("inf")):
            raise GatelabError(f"weight_decay must be a finite number >= 0 (or None: the authors'), got {decay!r}")
        self.schedule.validate(self.epochs, harden=self.harden_from is not None)
        return replace(self, lam=lam, weight_decay=decay)

    @property
    def expanding(self) -> bool:
        return any(f < 1 for f in (self.init_active if isinstance(self.init_active, list) else [self.init_active]))

    @property
    def schedule(self) -> KSchedule:
        return KSchedule(k=self.k, plastic_from=self.plastic_from, harden_from=self.harden_from)


# The authors' starts for LeNet-5-Caffe (gates on conv1's 20 and conv2's 50 channels, fc1's 800 and fc2's
# 500 inputs): expand from 3-3-3 at k = 1 (fc1's inputs follow conv2: 3 channels of 16 pixels), prune at k = 7.
AUTHORS_STARTS = {
    "expand": dict(init_active=[3 / 20, 3 / 50, 48 / 800, 3 / 500], k=1.0),
    "prune": dict(init_active=1.0, k=7.0),
}


def training_splits(config: NPNConfig, data_root=None) -> tuple[tuple, tuple]:
    """``(train, val)``: the training images minus a seeded validation split of ``val_size``, and that split."""
    x, y, xv, yv = image_splits(config.dataset, config.val_size, config.seed, config.train_examples, data_root)
    return (x, y), (xv, yv)


def fit_npn(
    config: NPNConfig,
    data_root=None,
    quiet: bool = False,
    log_dir: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 300.0,
    resume: str | os.PathLike | None = None,
    on_epoch=None,
) -> tuple[torch.nn.Module, PlasticityLog]:
    """Train a plastic MLP or LeNet-5 on MNIST or Fashion-MNIST; returns the model and its log.

    The log's ``val_*`` numbers are on the validation split, ``test_error`` on the
    test split, read once at the end. ``checkpoint``/``resume`` as in ``train_plastic``.
    """
    return _fit(config.resolved(), True, data_root, quiet, log_dir, checkpoint, checkpoint_every, resume, on_epoch)


def dense_baseline(
    config: NPNConfig,
    data_root=None,
    quiet: bool = False,
    log_dir: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 300.0,
    resume: str | os.PathLike | None = None,
) -> tuple[torch.nn.Module, PlasticityLog]:
    """The same network trained densely (no gates, k -> infinity) for the same epochs, seed and splits."""
    return _fit(config.resolved(), False, data_root, quiet, log_dir, checkpoint, checkpoint_every, resume, None)


def _fit(config: NPNConfig, plastic: bool, data_root, quiet, log_dir, checkpoint, checkpoint_every, resume, on_epoch):
    torch.manual_seed(config.seed)
    model = build_model(config.model)
    if plastic:  # before the data is read, so that a bad lam is refused at once
        make_plastic(model, init_active=config.init_active, k=config.k, lam=config.lam, logits=config.logits)
    train, val = training_splits(config, data_root)
    model(train[0][:1])  # records the input shape for summaries
    log = train_plastic(
        model,
        train,
        val,
        config.epochs,
        config.schedule if plastic else KSchedule(k=K_HARD),
        lr=config.lr,
        batch_size=config.batch_size,
        expand_fill=config.expand_fill if plastic else 0.0,
        expand_units=plastic and config.expanding and not config.expand_fill,
        trigger=config.trigger,
        weight_decay=config.weight_decay,
        lr_decay_at=config.lr_decay_at,
        harden=plastic and config.harden_from is not None,
        device=config.device,
        quiet=quiet,
        log_dir=log_dir,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        config={**asdict(config), "dense": not plastic},
        on_epoch=on_epoch,
    )
    scores = classifier_scores(model, *mnist_tensors(config.dataset, "test", data_root))
    log.test_loss, log.test_error = scores["loss"], scores["error"]
    return model, log


def quick_config(model: str, start: str, seed: int, device: str = "cpu") -> NPNConfig:
    """A short version of the authors' schedule on 10,000 training images, for ``start`` ``expand`` or
    ``prune`` (``AUTHORS_STARTS``): one ordinary epoch, plastic epochs, one hardening epoch."""
    epochs = 6
    return NPNConfig(
        model=model,
        **AUTHORS_STARTS[start],
        epochs=epochs,
        plastic_from=2,
        harden_from=epochs,
        lr_decay_at=None,
        train_examples=10000,
        seed=seed,
        device=device,
    )
