"""Defense-VAE's mode 3: fine-tune the purifier and the classifier together, the classification loss added.

    classifier3, purifier3, history = fine_tune(net, purifier, adversarial, clean, labels, EndToEndConfig())
    logits = Defended(classifier3, purifier3)(x)

The objective per minibatch of pairs is Defense-VAE's (BCE(decode(z), x_clean) summed, plus r·KL) plus ``weight``
times the cross-entropy of the classifier on the reconstruction, summed over the pairs: so the VAE is pulled towards
reconstructions that the classifier labels correctly, and the classifier adapts to the VAE's output. The released
code has no end-to-end training, so ``weight``, ``lr`` and ``epochs`` are our choices (see EndToEndConfig). Both
start from copies of the given models; the originals are left untouched.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gatelab.defense.purifier import DefenseVAE, batch_of, check_pixels
from gatelab.defense.vae import kl_divergence, loss
from gatelab.devices import resolve_device
from gatelab.errors import GatelabError
from gatelab.training import train_epochs


@dataclass
class EndToEndConfig:
    """Fine-tuning of VAE and classifier together: Adam(``lr``) over ``epochs`` passes of the pairs, ``batch_size``
    pairs a step (the paper's VAE batch), classification loss weighted by ``weight`` against the summed BCE.

    The weight only matters to the VAE (the classifier sees the classification loss alone, and Adam ignores its
    scale). A trained VAE's summed BCE is about 50 nats a pair against a cross-entropy of a few hundredths, so at
    weight 1 the VAE just goes on denoising; 100, chosen on model A's validation split, lets the classifier steer it
    (one epoch on the same 52,884 pairs: FGSM / RAND+FGSM / CW 98.6 / 98.6 / 92.6% at 100, 97.6 / 98.4 / 91.4% at
    1, against mode 1's 97.8 / 97.8 / 92.2%; README)."""

    epochs: int = 1
    batch_size: int = 16
    lr: float = 1e-4
    weight: float = 100.0

    def validate(self) -> EndToEndConfig:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GatelabError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr", "weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise GatelabError(f"{name} must be a finite number > 0, got {value!r}")
        return self


def fine_tune(
    classifier: nn.Module,
    purifier: DefenseVAE,
    adversarial,
    clean,
    labels,
    config: EndToEndConfig | None = None,
    *,
    seed: int = 0,
    device: str = "cpu",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 300.0,
    resume: str | os.PathLike | None = None,
    quiet: bool = False,
    log_dir: str | os.PathLike | None = None,
) -> tuple[nn.Module, DefenseVAE, list[dict]]:
    """Copies of ``classifier`` and ``purifier`` fine-tuned together on (adversarial, clean, label) triples.

    ``adversarial`` and ``clean`` are as :meth:`DefenseVAE.fit` takes them (uint8 memmaps from ``load_pairs`` too),
    ``labels`` the class of each pair (``load_pair_labels``). Returns the classifier (eval mode), a fitted
    DefenseVAE and the per-epoch history (``loss``, ``classification``: means per pair). ``checkpoint``/``resume``
    as in ``DefenseVAE.fit``: with one thread a resumed run equals an uninterrupted one exactly.
    """
    config = (config or EndToEndConfig()).validate()
    if not isinstance(purifier, DefenseVAE):
        raise GatelabError(f"purifier must be a fitted DefenseVAE; got {type(purifier).__name__}")
    if not isinstance(classifier, nn.Module):
        raise GatelabError(f"classifier must be a torch nn.Module; got {type(classifier).__name__}")
    adversarial, clean = check_pixels(adversarial, "adversarial images"), check_pixels(clean, "clean images")
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    n = adversarial.shape[0]
    if clean.shape[0] != n or labels.shape != (n,) or labels.dtype != torch.int64:
        raise GatelabError(
            f"one clean image and one int64 label per adversarial image are needed; got {n} adversarial, "
            f"{clean.shape[0]} clean and labels of shape {tuple(labels.shape)} ({labels.dtype})"
        )
    dev = resolve_device(device)
    torch.manual_seed(seed)
    models = nn.ModuleDict({"vae": copy.deepcopy(purifier._fitted()), "classifier": copy.deepcopy(classifier)}).to(dev)
    vae, net = models["vae"], models["classifier"]
    r = purifier.config.r
    optimizer = torch.optim.Adam(models.parameters(), lr=config.lr)

    def step(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        x, target = batch_of(adversarial, idx, dev), batch_of(clean, idx, dev)
        recon, mu, logvar = vae(x)
        ce = F.cross_entropy(net(recon), labels[idx].to(dev), reduction="sum")
        cost = loss(recon, target, mu, logvar, r) + config.weight * ce
        optimizer.zero_grad(set_to_none=True)
        cost.backward()
        optimizer.step()
        return {"loss": cost.detach(), "classification": ce.detach(), "kl": kl_divergence(mu.detach(), logvar.detach())}

    def per_pair(epoch: int, means: dict[str, float]) -> dict[str, float]:
        steps = -(-n // config.batch_size)
        return {k: v * steps / n for k, v in means.items()}

    history = train_epochs(
        "defense-end-to-end",
        config,
        models,
        optimizer,
        n,
        step,
        epoch_end=per_pair,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        quiet=quiet,
        log_dir=log_dir,
        desc="end-to-end",
    )
    tuned = DefenseVAE(copy.copy(purifier.config), seed=seed, device=str(dev))
    tuned.vae_, tuned.history_ = vae.eval(), history
    return net.eval(), tuned, history
