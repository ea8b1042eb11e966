"""The Defense-GAN-style projection baseline: purify x by searching the generator's latent space for G(z) closest to x.

    x_pure = project(vae, x)                        # G(z*) of the best of R = 10 restarts, L = 200 steps each
    recs, errors = project_restarts(vae, x)         # every restart's G(z) (N, R, 1, 28, 28) and its error (N, R)
    purifier = ProjectionPurifier(vae)              # .purify(x), like DefenseVAE's
    x_adv = attack(BPDA(net, purifier), x, y, "pgd", 0.3)   # adaptive PGD, the projection straight-through

The generator is the VAE's own decoder (``VAE18.decode``, BatchNorm in eval mode), of a fitted DefenseVAE or a bare
VAE18; the issue allows it in place of a separately trained WGAN-GP, and it makes the speed comparison one of
inference methods on the same network: one encoder pass against L x R decoder passes and their gradients.

Settings from Defense-GAN's code (``kabkabm/defensegan``, ``models/gan.py`` and ``experiments/cfgs/gans/mnist.yml``):
L = 200 steps (REC_ITERS), R = 10 restarts (REC_RR), momentum SGD with learning rate 10 (REC_LR) and momentum 0.7 on
the per-image mean squared error summed over images and restarts; the learning rate is declared to drop tenfold after
80% of the steps, as here. Starting points: z ~ N(0, I) (Defense-GAN drew them with standard deviation
sqrt(1 / latent)). The restart with the lowest final error is kept per image.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gatelab.defense.purifier import DefenseVAE, batch_of, check_pixels
from gatelab.defense.vae import VAE18
from gatelab.errors import GatelabError

STEPS = 200
RESTARTS = 10
LR = 10.0
MOMENTUM = 0.7
DECAY_AT = 0.8  # fraction of the steps after which the learning rate is multiplied by 0.1
BATCH = 100  # images per batch (times the restarts in one decoder pass)


def _decoder(generator: VAE18 | DefenseVAE) -> VAE18:
    if isinstance(generator, DefenseVAE):
        generator = generator._fitted()
    if not isinstance(generator, VAE18):
        raise GatelabError(f"generator must be a VAE18 or a fitted DefenseVAE; got {type(generator).__name__}")
    return generator


def _count(name: str, value, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise GatelabError(f"{name} must be an integer >= {least}, got {value!r}")
    return value


def _number(name: str, value, ok, accepted: str) -> float:
    """``value`` as a float if it is a finite number for which ``ok`` holds, else a GatelabError."""
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if bad or not ok(value):
        raise GatelabError(f"{name} must be {accepted}, got {value!r}")
    return float(value)


def _settings(steps, restarts, lr, momentum, seed, batch_size) -> tuple[int, int, float, float, int, int]:
    """The projection's settings, checked; see :func:`project_restarts`."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise GatelabError(f"seed must be an integer, got {seed!r}")
    return (
        _count("steps", steps, 0),
        _count("restarts", restarts, 1),
        _number("lr", lr, lambda v: v > 0, "a finite number > 0"),
        _number("momentum", momentum, lambda v: 0 <= v < 1, "a number in [0, 1)"),
        seed,
        _count("batch_size", batch_size, 1),
    )


def project_restarts(
    generator: VAE18 | DefenseVAE,
    x,
    steps: int = STEPS,
    restarts: int = RESTARTS,
    lr: float = LR,
    momentum: float = MOMENTUM,
    seed: int = 0,
    batch_size: int = BATCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every restart's projection of images ``x`` ((N, 1, 28, 28), uint8 or float in [0, 1]) onto the decoder's range.

    Returns ``G(z)`` after ``steps`` steps for each image and restart, (N, restarts, 1, 28, 28), and the mean squared
    error of each to its image, (N, restarts). ``steps`` = 0 gives the starting points. ``batch_size`` images (times
    ``restarts`` codes) are optimised together on the generator's device; ``seed`` fixes the starting points, drawn
    on the CPU so that every device starts from the same ones. Results are on the device of a tensor ``x``.
    """
    vae = _decoder(generator)
    steps, restarts, lr, momentum, seed, batch_size = _settings(steps, restarts, lr, momentum, seed, batch_size)
    x = check_pixels(x)
    out = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    device = next(vae.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    decay_at = math.ceil(DECAY_AT * steps)
    was_training = vae.training
    vae.eval()
    recs, errors = [], []
    try:
        for start in range(0, x.shape[0], batch_size):
            target = batch_of(x, slice(start, start + batch_size), device)
            n = target.shape[0]
            target = target.repeat_interleave(restarts, dim=0)  # image i's restarts are rows i*R .. i*R + R - 1
            z = torch.randn(n * restarts, vae.latent, generator=gen).to(device).requires_grad_(True)
            velocity = torch.zeros_like(z)
            for step in range(steps):
                rate = lr if step < decay_at else 0.1 * lr
                with torch.enable_grad():  # a descent on z, even when the caller runs under no_grad
                    cost = (vae.decode(z) - target).pow(2).mean(dim=(1, 2, 3)).sum()
                    (grad,) = torch.autograd.grad(cost, z)
                with torch.no_grad():
                    velocity.mul_(momentum).add_(grad)
                    z.sub_(rate * velocity)
            with torch.no_grad():
                rec = vae.decode(z)
                err = (rec - target).pow(2).mean(dim=(1, 2, 3))
            recs.append(rec.view(n, restarts, *rec.shape[1:]).to(out))
            errors.append(err.view(n, restarts).to(out))
    finally:
        vae.train(was_training)
    return torch.cat(recs), torch.cat(errors)


def project(
    generator: VAE18 | DefenseVAE,
    x,
    steps: int = STEPS,
    restarts: int = RESTARTS,
    lr: float = LR,
    momentum: float = MOMENTUM,
    seed: int = 0,
    batch_size: int = BATCH,
) -> torch.Tensor:
    """Defense-GAN's purification of images ``x``: per image, G(z*) of the restart with the lowest squared error.

    Arguments as in :func:`project_restarts`; returns float32 (N, 1, 28, 28) in [0, 1]."""
    recs, errors = project_restarts(generator, x, steps, restarts, lr, momentum, seed, batch_size)
    return recs[torch.arange(recs.shape[0], device=recs.device), errors.argmin(dim=1)]


class ProjectionPurifier:
    """The projection baseline with DefenseVAE's interface: ``purify(x)`` is :func:`project` with these settings."""

    def __init__(
        self,
        generator: VAE18 | DefenseVAE,
        steps: int = STEPS,
        restarts: int = RESTARTS,
        lr: float = LR,
        momentum: float = MOMENTUM,
        seed: int = 0,
        batch_size: int = BATCH,
    ):
        self.vae = _decoder(generator)
        self.settings = _settings(steps, restarts, lr, momentum, seed, batch_size)

    def purify(self, x) -> torch.Tensor:
        """Projections of images ``x`` (as DefenseVAE.purify accepts) onto the decoder's range."""
        return project(self.vae, x, *self.settings)


class _StraightThrough(torch.autograd.Function):
    """Returns ``purified``; on the way back, hands the gradient to ``x`` unchanged (the identity)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, purified: torch.Tensor) -> torch.Tensor:
        return purified.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class BPDA(nn.Module):
    """``classifier(purifier.purify(x))`` with the purification taken as the identity in the backward pass: BPDA
    (Athalye, Carlini & Wagner, ICML 2018), the adaptive attack on a purifier whose gradient is unusable, as the
    projection's (an inner optimisation with restarts). Give it to :func:`gatelab.defense.attack` ("pgd").

    Each forward pass runs a full purification: PGD with 40 steps costs 40 projections per image."""

    def __init__(self, classifier: nn.Module, purifier):
        super().__init__()
        if not isinstance(classifier, nn.Module) or not callable(getattr(purifier, "purify", None)):
            raise GatelabError("BPDA needs an nn.Module classifier and a purifier with a purify(x) method")
        self.classifier = classifier
        self.purifier = purifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        purified = self.purifier.purify(x.detach()).detach().to(x.device)
        return self.classifier(_StraightThrough.apply(x, purified))
