"""The black-box attacker of Defense-GAN and Defense-VAE: a Papernot substitute trained on the target's answers.

    sub, history = train_substitute(oracle, x_held_out[:150], SubstituteConfig())   # model E, 6 rounds, λ = 0.1
    x_adv = attack(sub, x, sub_labels, "fgsm", 0.3)                                  # then shown to the target

Papernot et al., "Practical Black-Box Attacks against Machine Learning" (AsiaCCS 2017), as in cleverhans'
``mnist_blackbox`` tutorial that Defense-GAN's black-box experiment runs: the attacker holds a few images (150 held-out
test images), labels them by querying the target (``oracle``: only its predicted labels are used), trains the
substitute for ``epochs`` epochs, then doubles its set by Jacobian-based augmentation, x + λ·sign(∂F_y(x)/∂x) for the
oracle label y, and repeats, ``rounds`` trainings in all (150 · 2^5 = 4,800 images after 6 rounds). The sign of λ
flips after the third round (cleverhans' ``lmbda_coef``), so the new points step away from, then towards, the class.
Here the new points are clipped to [0, 1], so that they stay images the oracle accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gatelab.defense.attacks import check_images, check_model
from gatelab.defense.models import NAMES, Classifier, classifier
from gatelab.errors import GatelabError, check_choice
from gatelab.evaluation import predict
from gatelab.progress import say

HOLD_OUT = 150
"""Held-out test images the attacker starts from (Papernot et al.; Defense-GAN's black-box experiment)."""


@dataclass
class SubstituteConfig:
    """The substitute's training, cleverhans' ``mnist_blackbox`` defaults: 6 rounds, λ = 0.1, 10 epochs a round,
    Adam lr 0.001, batch 128."""

    model: str = "E"
    rounds: int = 6
    lam: float = 0.1
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0

    def validate(self) -> SubstituteConfig:
        check_choice("substitute", self.model, NAMES)
        for name in ("rounds", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GatelabError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lam", "lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise GatelabError(f"{name} must be a finite number > 0, got {value!r}")
        return self


def jacobian_augmentation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """New points x + lam·sign(∂ model(x)[y] / ∂x), clipped to [0, 1] (lam may be negative)."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).gather(1, y[:, None]).sum(), x)
    return (x + lam * grad.sign()).clamp(0.0, 1.0).detach()


def train_substitute(
    oracle: nn.Module, images: torch.Tensor, config: SubstituteConfig | None = None, quiet: bool = False
) -> tuple[Classifier, list[dict]]:
    """A substitute of ``oracle`` trained from ``images`` alone (the oracle's labels, never the true ones).

    Returns the substitute (eval mode, on the oracle's device) and per round: the set size and the substitute's
    agreement with the oracle on its own training set. The whole training takes seconds (model E on at most
    150 · 2^(rounds - 1) images), so it keeps no checkpoint: rerun it with the same seed to get the same model.
    """
    config = (config or SubstituteConfig()).validate()
    check_images(images)
    device = next(oracle.parameters()).device
    x = images.to(device)
    y = predict(oracle, x).to(device)
    check_model(oracle, x[:2], y[:2])
    torch.manual_seed(config.seed)
    sub = classifier(config.model).to(device)
    optimizer = torch.optim.Adam(sub.parameters(), lr=config.lr)
    history = []
    for rnd in range(config.rounds):
        sub.train()
        for _ in range(config.epochs):
            for idx in torch.randperm(len(x), device=device).split(config.batch_size):
                cost = F.cross_entropy(sub(x[idx]), y[idx])
                optimizer.zero_grad(set_to_none=True)
                cost.backward()
                optimizer.step()
        sub.eval()
        agreement = float((predict(sub, x).to(device) == y).float().mean())  # once a round
        history.append({"round": rnd + 1, "images": len(x), "agreement": agreement})
        say(
            f"substitute round {rnd + 1}/{config.rounds}: {len(x)} images, agrees with the oracle on {agreement:.3f}",
            quiet,
        )
        if rnd < config.rounds - 1:
            lam = config.lam if rnd >= 3 else -config.lam  # cleverhans: lmbda_coef = 2 * int(int(rho / 3) != 0) - 1
            new = jacobian_augmentation(sub, x, y, lam)
            x, y = torch.cat([x, new]), torch.cat([y, predict(oracle, new).to(device)])
    return sub.eval(), history
