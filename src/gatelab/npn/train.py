"""Plastic MNIST classifiers with the authors' three-stage schedule, for the CLI and the reproductions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gatelab.data import IMAGE_DATASETS, mnist_tensors
from gatelab.errors import GatelabError, check_choice
from gatelab.gates.models import build_model
from gatelab.gates.train import PAPER_LAMBDA
from gatelab.npn.plasticity import KSchedule, PlasticityLog, make_plastic, train_plastic

NPN_MODELS = ("mlp", "lenet5")


@dataclass
class NPNConfig:
    """A plastic run. Defaults are the authors' LeNet-5 settings: 500 epochs, plasticity from
    epoch 100 to 350, hardening after, Adam 1e-3, batch 128. The authors expand at k = 1 and
    prune at k = 7; a small start at k = 1 learned poorly here (two moons), so both use k = 7."""

    model: str = "lenet5"
    dataset: str = "mnist"
    init_active: float = 1.0
    k: float = 7.0
    lam: float | list[float] | None = None  # None: the L0-ARM paper's per-layer values
    epochs: int = 500
    plastic_from: int = 100
    harden_from: int | None = 350
    expand_fill: float | None = None  # None: 0.1 when expanding, 0 when pruning
    lr: float = 1e-3
    batch_size: int = 128
    train_examples: int | None = None
    seed: int = 0

    def resolved(self) -> "NPNConfig":
        """A copy with the mode-dependent defaults filled in, validated."""
        check_choice("model", self.model, NPN_MODELS)
        check_choice("data set", self.dataset, IMAGE_DATASETS)
        if not 0 < self.init_active <= 1:
            raise GatelabError(f"init_active must be a fraction in (0, 1], got {self.init_active}")
        expanding = self.init_active < 1
        fill = self.expand_fill if self.expand_fill is not None else (0.1 if expanding else 0.0)
        lam = self.lam if self.lam is not None else PAPER_LAMBDA[self.model]
        return NPNConfig(
            self.model,
            self.dataset,
            self.init_active,
            self.k,
            lam,
            self.epochs,
            self.plastic_from,
            self.harden_from,
            fill,
            self.lr,
            self.batch_size,
            self.train_examples,
            self.seed,
        )

    @property
    def schedule(self) -> KSchedule:
        return KSchedule(k=self.k, plastic_from=self.plastic_from, harden_from=self.harden_from)


def fit_npn(config: NPNConfig, data_root=None, progress=None, on_epoch=None) -> tuple[torch.nn.Module, PlasticityLog]:
    """Train a plastic MLP or LeNet-5 on MNIST or Fashion-MNIST; returns the model and its log."""
    config = config.resolved()
    config.schedule.validate(config.epochs, harden=config.harden_from is not None)
    torch.manual_seed(config.seed)
    x, y = mnist_tensors(config.dataset, "train", data_root)
    if config.train_examples:
        x, y = x[: config.train_examples], y[: config.train_examples]
    val = mnist_tensors(config.dataset, "test", data_root)
    model = make_plastic(build_model(config.model), init_active=config.init_active, k=config.k, lam=config.lam)
    model(x[:1])  # records the input shape for summaries
    log = train_plastic(
        model,
        (x, y),
        val,
        config.epochs,
        config.schedule,
        lr=config.lr,
        batch_size=config.batch_size,
        expand_fill=config.expand_fill,
        harden=config.harden_from is not None,
        progress=progress,
        on_epoch=on_epoch,
    )
    return model, log


def dense_baseline(config: NPNConfig, data_root=None) -> float:
    """Test error (%) of the same network trained densely for the same epochs (the paper's reference)."""
    config = config.resolved()
    torch.manual_seed(config.seed)
    x, y = mnist_tensors(config.dataset, "train", data_root)
    if config.train_examples:
        x, y = x[: config.train_examples], y[: config.train_examples]
    xt, yt = mnist_tensors(config.dataset, "test", data_root)
    model = build_model(config.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), config.batch_size):
            idx = order[i : i + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        wrong = sum(int((model(xt[i : i + 2000]).argmax(1) != yt[i : i + 2000]).sum()) for i in range(0, len(xt), 2000))
    return 100.0 * wrong / len(xt)


def quick_config(model: str, init_active: float, seed: int) -> NPNConfig:
    """A minute-long version of the schedule on 10,000 training images: one ordinary epoch, then
    plasticity, then one hardening epoch (10 epochs for the MLP, 5 for LeNet-5)."""
    epochs = 10 if model == "mlp" else 5
    return NPNConfig(
        model=model,
        init_active=init_active,
        epochs=epochs,
        plastic_from=2,
        harden_from=epochs,
        train_examples=10000,
        seed=seed,
    )
