"""Training and files of the classifiers that Defense-VAE defends (models A-E of ``gatelab.defense.models``).

Defaults follow Defense-GAN's ``whitebox.py`` (``kabkabm/defensegan``), which trained the models whose checkpoints
Defense-VAE ships: ``nb_epochs`` 10 and ``learning_rate`` 0.001 (its flags), batch size 50 (``BATCH_SIZE`` of
``experiments/cfgs/gans/default.yml``, which ``FLAGS.batch_size`` reads), and Adam (our choice: cleverhans'
``model_train`` is thought to use it, not checked in its code). Defense-VAE's own scripts (``lxuniverse/defense-vae``,
``white_box/*.py``) name 20 classifier epochs (``--cnn-epochs 20``, folders ``cnnEpochs_20``) and retrain with
cleverhans' ``model_train`` at batch 128 and learning rate 0.001 (``defense_init_multi.py``): pass ``epochs=20,
batch_size=128`` to train as they did.
Unlike that code, the weights kept are those of the epoch with the lowest error on a seeded validation split carved
from the training images; the test split is never read here.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from gatelab.data import IMAGE_DATASETS, image_splits
from gatelab.defense.models import NAMES, Classifier, classifier
from gatelab.devices import resolve_device
from gatelab.errors import GatelabError, check_choice
from gatelab.training import fit_classifier
from gatelab.weights import config_from, load_weights, read_weights, save_weights


@dataclass
class ClassifierConfig:
    """Training of one of models A-E: Adam on raw [0, 1] pixels, the epoch with the lowest validation error kept.

    ``val_size`` training images (a split seeded by ``seed``) are held out to
    choose that epoch; ``train_examples`` then keeps only the first N of the
    rest (None: all of them).
    """

    model: str = "A"
    dataset: str = "mnist"
    epochs: int = 10
    batch_size: int = 50
    lr: float = 1e-3
    train_examples: int | None = None
    val_size: int = 5000
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> "ClassifierConfig":
        check_choice("classifier", self.model, NAMES)
        check_choice("data set", self.dataset, IMAGE_DATASETS)
        for name in ("epochs", "batch_size", "val_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GatelabError(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.train_examples is not None and (
            isinstance(self.train_examples, bool) or not isinstance(self.train_examples, int) or self.train_examples < 1
        ):
            raise GatelabError(f"train_examples must be at least 1 (or None for all), got {self.train_examples!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise GatelabError(f"seed must be a whole number of at least 0, got {self.seed!r}")
        if (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, (int, float))
            or not (math.isfinite(self.lr) and self.lr > 0)
        ):
            raise GatelabError(f"lr must be a finite positive number, got {self.lr!r}")
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
    purifier=None,
) -> tuple[Classifier, list[dict]]:
    """Train ``classifier(config.model)`` on the config's data set; returns the model (eval mode) and the history.

    The returned weights are those of the epoch with the lowest validation
    error. ``checkpoint`` is kept at every epoch's end and every
    ``checkpoint_every`` seconds; ``resume`` continues from one exactly.
    With a fitted ``purifier`` (a DefenseVAE), the training and validation
    images are replaced by their purified versions first: Defense-VAE's mode 2,
    a classifier retrained on reconstructions of clean images.
    """
    config.validate()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    x, y, xv, yv = image_splits(config.dataset, config.val_size, config.seed, config.train_examples, data_root)
    if purifier is not None:
        x, xv = purifier.purify(x), purifier.purify(xv)
        torch.manual_seed(config.seed)  # the same initial weights as without a purifier
    x, y, xv, yv = x.to(device), y.to(device), xv.to(device), yv.to(device)
    model = classifier(config.model).to(device)
    history = fit_classifier(
        "defense-classifier",
        config,
        model,
        (x, y),
        (xv, yv),
        desc=f"model {config.model} {config.dataset}",
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        quiet=quiet,
        log_dir=log_dir,
    )
    return model.eval(), history


def save_classifier(model: Classifier, config: ClassifierConfig, path, test_accuracy: float | None = None) -> Path:
    """Weights as safetensors; the training config and the test accuracy (if measured) in its metadata.

    A subclass's extra settings (an AdversarialConfig's PGD) are kept apart, under "training_extra", so that
    ``load_classifier`` reads any classifier file back as a ClassifierConfig."""
    settings = asdict(config)
    base = {f.name: settings.pop(f.name) for f in fields(ClassifierConfig)}
    meta = {"defense_classifier_config": {**base, "device": "cpu"}, "test_accuracy": test_accuracy}
    if settings:
        meta["training_extra"] = settings
    return save_weights(model, path, meta)


def load_classifier(path, device: str = "cpu") -> tuple[Classifier, ClassifierConfig]:
    """Rebuild a classifier written by ``save_classifier``, in eval mode on ``device``; damage is a GatelabError."""
    what = "Defense-VAE classifier"
    meta, tensors = read_weights(path, what)
    config = config_from(ClassifierConfig, meta.get("defense_classifier_config"), path, what)
    model = load_weights(classifier(config.model), tensors, path, what)
    return model.to(resolve_device(device)).eval(), config
