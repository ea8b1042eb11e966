"""The small CNN classifiers that NICE explains on MNIST and Fashion-MNIST, their training and their files."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from gatelab.data import IMAGE_DATASETS, image_splits
from gatelab.devices import resolve_device
from gatelab.errors import GatelabError, check_choice
from gatelab.nice.compress import mixed_resolution, random_cell_masks
from gatelab.training import fit_classifier
from gatelab.weights import config_from, load_weights, read_weights, save_weights

AUGMENTS = ("none", "mixed_resolution")


def small_cnn(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """Two strided 3x3 convolutions (32, 64 channels) and a 128-unit layer, for 28x28 images.

    Strided convolutions instead of max-pooling: as accurate here and several
    times faster to differentiate, which NICE does at every mask-training step.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Linear(128, num_classes),
    )


@dataclass
class ClassifierConfig:
    """Training of the classifier to explain: Adam, a few epochs on raw [0, 1] pixels (0 is black).

    ``val_size`` training images (a seeded split) are held out to choose the
    epoch whose weights are kept; ``train_examples`` then keeps only the first N
    of the rest. The test split is never read while training.
    """

    dataset: str = "mnist"
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    train_examples: int | None = None
    val_size: int = 5000
    augment: str = "none"
    lowres_factor: int = 8
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> "ClassifierConfig":
        check_choice("data set", self.dataset, IMAGE_DATASETS)
        check_choice("augmentation", self.augment, AUGMENTS)
        for name in ("epochs", "batch_size", "val_size", "lowres_factor"):
            if getattr(self, name) < 1:
                raise GatelabError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.train_examples is not None and self.train_examples < 2:
            raise GatelabError(f"train_examples must be at least 2 (or None for all), got {self.train_examples}")
        if not self.lr > 0:
            raise GatelabError(f"lr must be a positive number, got {self.lr}")
        return self


def train_classifier(
    config: ClassifierConfig,
    data_root=None,
    *,
    quiet: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 300.0,
    resume: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
    init: nn.Module | None = None,
) -> tuple[nn.Module, list[dict]]:
    """Train ``small_cnn`` on the config's data set; returns the model (eval mode) and the per-epoch history.

    The returned weights are those of the epoch with the lowest error on the
    validation split (``config.val_size`` training images, seeded by
    ``config.seed``). ``checkpoint`` is kept each epoch and every
    ``checkpoint_every`` seconds; ``resume`` continues from one. ``init``, a
    trained ``small_cnn``, makes it a fine-tuning that starts from its weights.
    """
    config.validate()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    x, y, xv, yv = image_splits(config.dataset, config.val_size, config.seed, config.train_examples, data_root)
    if config.augment == "mixed_resolution":
        g = torch.Generator().manual_seed(config.seed)
        f = config.lowres_factor
        x = torch.cat([x, mixed_resolution(x, random_cell_masks(x, f, g), f)])
        xv = torch.cat([xv, mixed_resolution(xv, random_cell_masks(xv, f, g), f)])
        y, yv = torch.cat([y, y]), torch.cat([yv, yv])
    x, y, xv, yv = x.to(device), y.to(device), xv.to(device), yv.to(device)
    model = small_cnn()
    if init is not None:
        model.load_state_dict(init.state_dict())
    model = model.to(device)
    history = fit_classifier(
        "nice-classifier",
        config,
        model,
        (x, y),
        (xv, yv),
        desc=f"classifier {config.dataset}",
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        quiet=quiet,
        log_dir=log_dir,
    )
    return model.eval(), history


def save_classifier(model: nn.Module, config: ClassifierConfig, path, test_accuracy: float | None = None) -> Path:
    """Weights as safetensors, the training config and test accuracy in its metadata."""
    meta = {"classifier_config": {**asdict(config), "device": "cpu"}, "test_accuracy": test_accuracy}
    return save_weights(model, path, meta)


def load_classifier(path, device: str = "cpu") -> tuple[nn.Module, ClassifierConfig]:
    """Rebuild a classifier written by ``save_classifier``, in eval mode on ``device``."""
    what = "NICE classifier"
    meta, tensors = read_weights(path, what)
    config = config_from(ClassifierConfig, meta.get("classifier_config"), path, what)
    model = load_weights(small_cnn(), tensors, path, what)
    return model.to(resolve_device(device)).eval(), config
