"""Training gated classifiers on MNIST-like data with the papers' settings, and their checkpoints."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from gatelab.data import IMAGE_DATASETS, mnist_tensors
from gatelab.errors import GatelabError, check_choice
from gatelab.files import atomic_path
from gatelab.gates.api import GRANULARITIES, expected_l0, sparsify, train_step
from gatelab.gates.estimators import ESTIMATORS
from gatelab.gates.export import summary
from gatelab.gates.models import MODELS, build_model

# The authors' settings (l0-arm and L0_regularization code): lambda per gated layer, in units of 1/N,
# and the initial keep probability (1 - the initial drop rate).
PAPER_LAMBDA = {
    "mlp": {"fc1": 0.1, "fc2": 0.1, "fc3": 0.1},
    "lenet5": {"conv1": 10.0, "conv2": 0.5, "fc1": 0.1, "fc2": 10.0},
    "resnet": 0.1,
}
PAPER_KEEP_PROB = {"mlp": {"fc1": 0.8, "fc2": 0.5, "fc3": 0.5}, "lenet5": 0.5, "resnet": 0.5}


@dataclass
class TrainConfig:
    """One gated training run. Defaults are the papers': Adam 1e-3, batch 128, 200 epochs, k = 7."""

    model: str = "lenet5"
    dataset: str = "mnist"
    granularity: str = "structured"
    estimator: str = "arm"
    lam: float | list[float] | None = None  # None: the paper's per-layer values
    keep_prob: float | list[float] | None = None  # None: the paper's
    gate_function: str = "scaled_sigmoid"
    k: float = 7.0
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    train_examples: int | None = None  # use only the first n training images (quick runs)
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> "TrainConfig":
        check_choice("model", self.model, MODELS)
        check_choice("data set", self.dataset, IMAGE_DATASETS)
        check_choice("granularity", self.granularity, GRANULARITIES)
        check_choice("estimator", self.estimator, ESTIMATORS)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise GatelabError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise GatelabError(f"lr must be a positive number, got {self.lr}")
        lams = self.lam if isinstance(self.lam, (list, tuple)) else [self.lam]
        if any(v is not None and v < 0 for v in lams):
            raise GatelabError(f"lam must be >= 0, got {self.lam}")
        if self.train_examples is not None and self.train_examples < 1:
            raise GatelabError(f"train_examples must be at least 1, got {self.train_examples}")
        return self


@dataclass
class History:
    """Per-epoch numbers of a run."""

    epoch: list[int] = field(default_factory=list)
    test_error: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    expected_l0: list[float] = field(default_factory=list)
    architecture: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


@torch.no_grad()
def test_error(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    """Classification error in percent, with the deterministic test-time gates."""
    model.eval()
    device = next(model.parameters()).device
    wrong = 0
    for i in range(0, len(x), batch_size):
        pred = model(x[i : i + batch_size].to(device)).argmax(1)
        wrong += int((pred.cpu() != y[i : i + batch_size]).sum())
    return 100.0 * wrong / len(x)


def build_gated(config: TrainConfig) -> torch.nn.Module:
    """The config's model with its gates, on the config's device."""
    config.validate()
    model = build_model(config.model)
    lam = PAPER_LAMBDA[config.model] if config.lam is None else config.lam
    keep = PAPER_KEEP_PROB[config.model] if config.keep_prob is None else config.keep_prob
    sparsify(
        model,
        config.granularity,
        config.estimator,
        lam=lam,
        keep_prob=keep,
        gate_function=config.gate_function,
        k=config.k,
    )
    return model.to(config.device)


def fit(
    config: TrainConfig,
    data_root=None,
    progress: bool = True,
    on_epoch: Callable[[int, torch.nn.Module, History], None] | None = None,
) -> tuple[torch.nn.Module, History]:
    """Train a gated model on MNIST or Fashion-MNIST; returns the model and its per-epoch history."""
    config.validate()
    torch.manual_seed(config.seed)
    x_train, y_train = mnist_tensors(config.dataset, "train", data_root)
    x_test, y_test = mnist_tensors(config.dataset, "test", data_root)
    if config.train_examples:
        x_train, y_train = x_train[: config.train_examples], y_train[: config.train_examples]
    model = build_gated(config)
    model(x_train[:1].to(config.device))  # records the input shape
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    n = len(x_train)
    history = History()
    start = time.perf_counter()
    steps_per_epoch = math.ceil(n / config.batch_size)
    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        disable=not (progress and sys.stderr.isatty()),
        unit="step",
        dynamic_ncols=True,
    )
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(n)
        total = 0.0
        for i in range(0, n, config.batch_size):
            idx = order[i : i + config.batch_size]
            out = train_step(
                model, x_train[idx].to(config.device), y_train[idx].to(config.device), optimizer, dataset_size=n
            )
            total += out["loss"] * len(idx)
            bar.update(1)
        err = test_error(model, x_test, y_test)
        s = summary(model)
        history.epoch.append(epoch)
        history.test_error.append(err)
        history.train_loss.append(total / n)
        history.expected_l0.append(float(expected_l0(model).detach()))
        history.architecture.append(s.architecture)
        history.seconds.append(time.perf_counter() - start)
        bar.set_postfix(epoch=epoch, err=f"{err:.2f}%", arch=s.architecture)
        if on_epoch:
            on_epoch(epoch, model, history)
    bar.close()
    return model, history


def save_checkpoint(model: torch.nn.Module, config: TrainConfig, path) -> Path:
    """Write the gated model's weights and gates (safetensors) with the config in its metadata."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata={"gatelab": json.dumps({"train_config": asdict(config)})})
    return path


def load_checkpoint(path) -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild a gated model saved by ``save_checkpoint``."""
    path = Path(path)
    if not path.is_file():
        raise GatelabError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        config = TrainConfig(**json.loads(meta["gatelab"])["train_config"])
    except Exception as exc:
        raise GatelabError(f"{path} is not a gatelab gates checkpoint ({type(exc).__name__}: {exc})") from exc
    config.device = "cpu"
    model = build_gated(config)
    load_model(model, str(path), device="cpu")
    model.eval()
    model(torch.zeros(1, 1, 28, 28))  # records the input shape
    return model, config
