"""The small CNN classifiers that NICE explains on MNIST and Fashion-MNIST, their training and their files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn
from tqdm.auto import tqdm

from gatelab.data import IMAGE_DATASETS, mnist_tensors
from gatelab.errors import GatelabError, check_choice
from gatelab.files import atomic_path


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
    """Training of the classifier to explain: Adam, a few epochs on raw [0, 1] pixels (0 is black)."""

    dataset: str = "mnist"
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    train_examples: int | None = None
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> "ClassifierConfig":
        check_choice("data set", self.dataset, IMAGE_DATASETS)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise GatelabError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise GatelabError(f"lr must be positive, got {self.lr}")
        return self


@torch.no_grad()
def predict(classifier: nn.Module, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """The classifier's labels for ``images`` (on the CPU), computed in batches on the classifier's device."""
    classifier.eval()
    device = next(classifier.parameters()).device
    return torch.cat([classifier(b.to(device)).argmax(1).cpu() for b in images.split(batch_size)])


def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` that ``classifier`` labels correctly."""
    return (predict(classifier, images) == labels.cpu()).float().mean().item() if len(images) else 0.0


def train_classifier(config: ClassifierConfig, data_root=None, progress: bool = True) -> tuple[nn.Module, float]:
    """Train ``small_cnn`` on the config's data set; returns the model and its test accuracy."""
    config.validate()
    torch.manual_seed(config.seed)
    x, y = mnist_tensors(config.dataset, "train", data_root)
    if config.train_examples:
        x, y = x[: config.train_examples], y[: config.train_examples]
    device = torch.device(config.device)
    x, y = x.to(device), y.to(device)
    model = small_cnn().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps = config.epochs * -(-len(x) // config.batch_size)
    bar = tqdm(total=steps, desc=f"classifier {config.dataset}", disable=not progress, leave=False)
    for _ in range(config.epochs):
        model.train()
        for idx in torch.randperm(len(x), device=device).split(config.batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    xt, yt = mnist_tensors(config.dataset, "test", data_root)
    model.eval()
    return model, accuracy(model, xt, yt)


def save_classifier(model: nn.Module, config: ClassifierConfig, path, test_accuracy: float | None = None) -> Path:
    """Weights as safetensors, the training config and test accuracy in its metadata."""
    path = Path(path)
    meta = {"classifier_config": {**asdict(config), "device": "cpu"}, "test_accuracy": test_accuracy}
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata={"gatelab": json.dumps(meta)})
    return path


def load_classifier(path, device: str = "cpu") -> tuple[nn.Module, ClassifierConfig]:
    """Rebuild a classifier written by ``save_classifier``, in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise GatelabError(f"classifier file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})["gatelab"])
        config = ClassifierConfig(**meta["classifier_config"])
    except Exception as exc:
        raise GatelabError(f"{path} is not a gatelab NICE classifier ({type(exc).__name__}: {exc})") from exc
    model = small_cnn()
    try:
        load_model(model, str(path), device="cpu")
    except RuntimeError as exc:
        raise GatelabError(f"{path} holds weights that do not fit small_cnn ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), config
