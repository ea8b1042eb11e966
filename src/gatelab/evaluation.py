"""The one loop that evaluates an image classifier: used by gates, npn and nice alike."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """``model``'s labels for ``x`` (on the CPU), in eval mode, in batches on the model's device."""
    return (
        torch.cat([logits.argmax(1).cpu() for logits in _logits(model, x, batch_size)])
        if len(x)
        else torch.zeros(0, dtype=torch.long)
    )


@torch.no_grad()
def classifier_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> dict:
    """Mean cross-entropy (``loss``) and error in percent (``error``) of ``model`` on ``(x, y)``, in eval mode.

    Eval mode gives gated models their deterministic test-time gates. Sums stay on
    the device and are read once at the end.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as inputs, and at least one; got {len(x)} and {len(y)}")
    device = _device(model)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    wrong = torch.zeros((), dtype=torch.long, device=device)
    for logits, labels in zip(_logits(model, x, batch_size), y.split(batch_size)):
        labels = labels.to(device)
        loss += F.cross_entropy(logits, labels, reduction="sum").double()
        wrong += (logits.argmax(1) != labels).sum()
    return {"loss": float(loss) / len(x), "error": 100.0 * int(wrong) / len(x)}


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    """Fraction of ``x`` that ``model`` labels as ``y`` (``classifier_scores``' error, as a fraction correct)."""
    return 1.0 - classifier_scores(model, x, y, batch_size)["error"] / 100.0


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _logits(model: nn.Module, x: torch.Tensor, batch_size: int):
    was_training = model.training
    model.eval()
    device = _device(model)
    try:
        for batch in x.split(batch_size):
            yield model(batch.to(device))
    finally:
        model.train(was_training)
