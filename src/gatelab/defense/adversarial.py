"""The peer a practitioner would otherwise pick: adversarial training with PGD (Madry et al., ICLR 2018).

    net, history = adversarial_training(AdversarialConfig(model="A"), init=clean_net)

Each minibatch is replaced by its PGD adversarial version (L∞ ε = 0.3, random start, ``steps`` steps of ``alpha``,
torchattacks' PGD against the model being trained, in eval mode), and the model takes an Adam step on the
cross-entropy of those. Madry et al. keep the last model, so no choice is made on a validation split; the split of
the classifier's config is still carved off, so that the model sees exactly the training images of the classifier it
is compared with, and its clean error is logged per epoch. torchattacks checks each batch's range on the host, one
sync per step that this loop cannot avoid.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gatelab.data import image_splits
from gatelab.defense.attacks import PGD_ALPHA, PGD_STEPS, _run, check_eps, library_attack
from gatelab.defense.classifiers import ClassifierConfig
from gatelab.defense.models import Classifier, classifier
from gatelab.devices import resolve_device
from gatelab.errors import GatelabError
from gatelab.evaluation import classifier_scores
from gatelab.training import train_epochs


@dataclass
class AdversarialConfig(ClassifierConfig):
    """A ClassifierConfig plus Madry's PGD: ``eps`` 0.3, ``steps`` 40 of ``alpha`` 0.01 (his MNIST setting)."""

    eps: float = 0.3
    steps: int = PGD_STEPS
    alpha: float = PGD_ALPHA

    def validate(self) -> AdversarialConfig:
        super().validate()
        check_eps(self.eps)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise GatelabError(f"steps must be an integer >= 1, got {self.steps!r}")
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha) and alpha > 0):
            raise GatelabError(f"alpha must be a finite number > 0, got {alpha!r}")
        return self


def adversarial_training(
    config: AdversarialConfig,
    data_root=None,
    *,
    init: nn.Module | None = None,
    quiet: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 300.0,
    resume: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
) -> tuple[Classifier, list[dict]]:
    """Train ``classifier(config.model)`` on PGD adversarial images; returns the last model (eval mode) and history.

    ``init``: a model of the same architecture whose weights to start from (say the clean classifier, to shorten
    the training; Madry et al. start from scratch). ``checkpoint``/``resume`` as in ``train_classifier``; the PGD
    random starts come from the global RNG, saved in the checkpoint, so a resumed run equals an uninterrupted one.
    """
    config.validate()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    x, y, xv, yv = image_splits(config.dataset, config.val_size, config.seed, config.train_examples, data_root)
    x, y, xv, yv = x.to(device), y.to(device), xv.to(device), yv.to(device)
    model = classifier(config.model)
    if init is not None:
        try:
            model.load_state_dict(init.state_dict())
        except (RuntimeError, AttributeError) as err:
            raise GatelabError(f"init must be a model {config.model} to start from ({err})") from None
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    pgd = library_attack(model, "pgd", config.eps, steps=config.steps, alpha=config.alpha)

    def step(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        idx = idx.to(device)
        adv = _run(pgd, x[idx], y[idx])  # torchattacks attacks in eval mode and restores training mode
        cost = F.cross_entropy(model(adv), y[idx])
        optimizer.zero_grad(set_to_none=True)
        cost.backward()
        optimizer.step()
        return {"loss": cost.detach()}

    def epoch_end(epoch: int, _means: dict) -> dict:
        return {"validation_error": classifier_scores(model, xv, yv)["error"]}  # logged, not used for a choice

    history = train_epochs(
        "defense-adversarial",
        config,
        model,
        optimizer,
        len(x),
        step,
        epoch_end=epoch_end,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        quiet=quiet,
        log_dir=log_dir,
        desc=f"PGD training {config.model}",
    )
    return model.eval(), history
