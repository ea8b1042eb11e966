"""VAE18, the convolutional VAE that Defense-VAE trains on (adversarial, clean) pairs, its loss and its config.

Shapes follow the authors' PyTorch model (``lxuniverse/defense-vae``, ``white_box/vae_models.py``):

    encoder  (N,1,28,28) -conv64 5x5 s1 p2-> 28 -conv64 4x4 s2 p3-> 16 -conv128 4x4 s2 p1-> 8 -conv256 4x4 s2 p1-> 4
             each convolution without bias, then BatchNorm and ReLU; flatten 256*4*4 = 4096 -> mu, log sigma^2 (128)
    decoder  z -fc 4096 + ReLU-> (256,4,4) -deconv128 4x4 s2 p1-> 8 -deconv64 4x4 s2 p1-> 16
             -deconv64 4x4 s2 p3-> 28 (each BatchNorm + ReLU, no bias) -deconv1 5x5 s1 p2, no bias-> sigmoid

The released model also defines a BatchNorm1d after the decoder's fc layer but never calls it; it is left out here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gatelab.errors import GatelabError

FLAT = 256 * 4 * 4  # the encoder's flattened width


def _conv(cin: int, cout: int, kernel: int, stride: int, padding: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _deconv(cin: int, cout: int, kernel: int, stride: int, padding: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class VAE18(nn.Module):
    """Convolutional VAE on (N, 1, 28, 28) images in [0, 1]; ``forward`` returns (reconstruction, mu, logvar)."""

    def __init__(self, latent: int = 128):
        super().__init__()
        if isinstance(latent, bool) or not isinstance(latent, int) or latent < 1:
            raise GatelabError(f"latent must be an integer >= 1, got {latent!r}")
        self.latent = latent
        self.encoder = nn.Sequential(
            *_conv(1, 64, 5, 1, 2), *_conv(64, 64, 4, 2, 3), *_conv(64, 128, 4, 2, 1), *_conv(128, 256, 4, 2, 1)
        )
        self.mu = nn.Linear(FLAT, latent)
        self.logvar = nn.Linear(FLAT, latent)
        self.expand = nn.Sequential(nn.Linear(latent, FLAT), nn.ReLU())
        self.decoder = nn.Sequential(
            *_deconv(256, 128, 4, 2, 1),
            *_deconv(128, 64, 4, 2, 1),
            *_deconv(64, 64, 4, 2, 3),
            nn.ConvTranspose2d(64, 1, 5, 1, 2, bias=False),
            nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu and log sigma^2 of q(z | x), each (N, latent)."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28) or x.shape[0] == 0:
            raise GatelabError(f"VAE18 takes images of shape (N, 1, 28, 28), N >= 1; got {tuple(x.shape)}")
        h = self.encoder(x).flatten(1)
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (N, 1, 28, 28) in (0, 1) from latent codes (N, latent)."""
        if z.dim() != 2 or z.shape[1] != self.latent:
            raise GatelabError(f"VAE18 decodes codes of shape (N, {self.latent}); got {tuple(z.shape)}")
        return self.decoder(self.expand(z).view(-1, 256, 4, 4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct ``x``: a reparameterised sample of z in training mode, mu in eval mode."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """decode(mu(x)) with BatchNorm in eval mode (running statistics), so a purified image does not depend on the
        rest of its batch; the released code left BatchNorm in training mode. Restores the module's previous mode.

        Measured once (model D, a VAE of one epoch on 9,000 pairs, 200 MNIST test images, mode 1): eval mode gives
        FGSM 88.5%, RAND+FGSM 91%, CW 61.5%, clean 91%; training mode 90.5%, 92%, 51.5%, 92%."""
        if not bool(((x >= 0) & (x <= 1)).all()):
            raise GatelabError("purify takes images with values in [0, 1] (no NaN); got values outside it")
        was_training = self.training
        self.eval()
        try:
            return self.decode(self.encode(x)[0])
        finally:
            self.train(was_training)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the batch and the latent units."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def loss(recon: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, r: float) -> torch.Tensor:
    """Defense-VAE's objective: BCE(recon, clean target) summed over pixels and batch, plus ``r`` times the KL term.

    ``recon`` is the reconstruction of the adversarial image, ``target`` the clean one; r = 0 (the released setting)
    makes it a denoising auto-encoder loss."""
    if recon.shape != target.shape:
        raise GatelabError(f"reconstruction {tuple(recon.shape)} and target {tuple(target.shape)} must have one shape")
    if mu.shape != logvar.shape:
        raise GatelabError(f"mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must have one shape")
    _check_r(r)
    bce = F.binary_cross_entropy(recon, target, reduction="sum")
    return bce if r == 0 else bce + r * kl_divergence(mu, logvar)


def _check_r(r) -> None:
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r < 0:
        raise GatelabError(f"r (the KL weight) must be a finite number >= 0, got {r!r}")


@dataclass
class VAEConfig:
    """Training settings of Defense-VAE, defaults from the paper and its released code (r = 0 there)."""

    latent: int = 128
    r: float = 0.0
    lr: float = 5e-4
    batch_size: int = 16
    epochs: int = 5

    def validate(self) -> VAEConfig:
        """Refuse impossible settings (wrong types, NaN, 0 or negatives) with a GatelabError; returns self."""
        for name in ("latent", "batch_size", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GatelabError(f"{name} must be an integer >= 1, got {value!r}")
        _check_r(self.r)
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
            raise GatelabError(f"lr must be a finite number > 0, got {self.lr!r}")
        return self
