"""Defense-VAE's purifier: VAE18 trained on (adversarial, clean) pairs, and a classifier defended by it.

    purifier = DefenseVAE(VAEConfig()).fit(adversarial, clean)   # tensors or numpy arrays (memmaps too)
    x_pure = purifier.purify(x_adv)                                # decode(mu), BatchNorm in eval mode
    defended = Defended(net, purifier)                             # net(decode(mu(x))), differentiable

Images are (N, 1, 28, 28), uint8 in 0..255 or floating point in [0, 1]. Training reads one minibatch of rows at a
time and converts only those to float, so the 720k pairs of the paper can live in a memory-mapped file.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gatelab.defense.vae import VAE18, VAEConfig, kl_divergence, loss
from gatelab.devices import resolve_device
from gatelab.errors import GatelabError
from gatelab.training import train_epochs
from gatelab.weights import config_from, load_weights, read_weights, save_weights

SHAPE = (1, 28, 28)
CHUNK = 4096  # rows per read when a float array's range is checked


def check_pixels(x, what: str = "images") -> torch.Tensor | np.ndarray:
    """Return ``x`` (a tensor or numpy array, memmaps included) if it is (N, 1, 28, 28), N >= 1, uint8 or floating
    point with every value in [0, 1]; else raise. Float arrays are checked CHUNK rows at a time, never copied whole."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise GatelabError(f"{what} must be a tensor or numpy array (N, 1, 28, 28); got {type(x).__name__}")
    if x.ndim != 4 or tuple(x.shape[1:]) != SHAPE or x.shape[0] == 0:
        raise GatelabError(f"{what} must have shape (N, 1, 28, 28) with N >= 1; got {tuple(x.shape)}")
    uint8 = x.dtype == (torch.uint8 if isinstance(x, torch.Tensor) else np.uint8)
    floating = x.is_floating_point() if isinstance(x, torch.Tensor) else np.issubdtype(x.dtype, np.floating)
    if not (uint8 or floating):
        raise GatelabError(f"{what} must be uint8 (0..255) or floating point in [0, 1]; got dtype {x.dtype}")
    if floating:
        for start in range(0, x.shape[0], CHUNK):
            chunk = x[start : start + CHUNK]
            inside = ((chunk >= 0) & (chunk <= 1)).all()  # NaN compares false, so it is refused too
            if not bool(inside):
                raise GatelabError(f"{what} must lie in [0, 1] (no NaN) when floating point; rows from {start} do not")
    return x


def batch_of(x: torch.Tensor | np.ndarray, idx: torch.Tensor | slice, device: torch.device) -> torch.Tensor:
    """Rows ``idx`` of checked images as float32 in [0, 1] on ``device``: only these rows are read and converted."""
    if isinstance(x, np.ndarray):
        rows = torch.from_numpy(
            np.array(x[idx.numpy() if isinstance(idx, torch.Tensor) else idx])
        )  # a copy of the rows
    else:
        rows = x[idx.to(x.device) if isinstance(idx, torch.Tensor) else idx]
    rows = rows.to(device)
    return rows.float().div_(255.0) if rows.dtype == torch.uint8 else rows.float()


class DefenseVAE:
    """VAE18 trained to map adversarial images to their clean originals (Li & Ji, arXiv:1812.06570).

    The objective per minibatch is BCE(decode(encode(x_adv)), x_clean) summed over pixels and pairs, plus r·KL, with
    Adam(lr); a reparameterised z is decoded while training, mu at test time. ``seed`` fixes the initial weights and
    the shuffling. Fitted attributes: ``vae_`` (in eval mode) and ``history_`` (per epoch: ``loss`` and ``kl``, means
    per pair).
    """

    def __init__(self, config: VAEConfig | None = None, *, seed: int = 0, device: str = "cpu"):
        if config is not None and not isinstance(config, VAEConfig):
            raise GatelabError(f"config must be a VAEConfig; got {type(config).__name__}")
        self.config = (config or VAEConfig()).validate()
        self.seed = seed
        self.device = resolve_device(device)
        self.vae_: VAE18 | None = None
        self.history_: list[dict] = []

    def fit(
        self,
        adversarial,
        clean,
        *,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: float = 300.0,
        resume: str | os.PathLike | None = None,
        quiet: bool = False,
        log_dir: str | os.PathLike | None = None,
    ) -> DefenseVAE:
        """Train on pairs (``adversarial[i]``, ``clean[i]``); see the module docstring for the accepted arrays.

        ``checkpoint`` is kept each epoch and every ``checkpoint_every`` seconds; ``resume`` continues from one (with
        one thread, exactly as if never stopped).
        """
        cfg = self.config
        adversarial = check_pixels(adversarial, "adversarial images")
        clean = check_pixels(clean, "clean images")
        if adversarial.shape[0] != clean.shape[0]:
            raise GatelabError(
                f"one clean image per adversarial image is needed; got {adversarial.shape[0]} and {clean.shape[0]}"
            )
        n = adversarial.shape[0]
        torch.manual_seed(self.seed)
        vae = VAE18(cfg.latent).to(self.device)
        optimizer = torch.optim.Adam(vae.parameters(), lr=cfg.lr)

        def step(idx: torch.Tensor) -> dict[str, torch.Tensor]:
            x, target = batch_of(adversarial, idx, self.device), batch_of(clean, idx, self.device)
            recon, mu, logvar = vae(x)
            cost = loss(recon, target, mu, logvar, cfg.r)
            optimizer.zero_grad(set_to_none=True)
            cost.backward()
            optimizer.step()
            return {"loss": cost.detach(), "kl": kl_divergence(mu.detach(), logvar.detach())}

        def per_pair(epoch: int, means: dict[str, float]) -> dict[str, float]:
            # train_epochs averages the steps' sums over the steps; the history holds means per pair
            steps = -(-n // cfg.batch_size)
            return {k: v * steps / n for k, v in means.items()}

        self.history_ = train_epochs(
            "defense-vae",
            cfg,
            vae,
            optimizer,
            n,
            step,
            epoch_end=per_pair,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            resume=resume,
            quiet=quiet,
            log_dir=log_dir,
            desc="Defense-VAE",
        )
        self.vae_ = vae.eval()
        return self

    def _fitted(self) -> VAE18:
        if self.vae_ is None:
            raise GatelabError("this DefenseVAE is not fitted yet; call fit(adversarial, clean) or DefenseVAE.load")
        return self.vae_

    def purify(self, x, batch_size: int = 500) -> torch.Tensor:
        """decode(mu(x)) for images ``x`` (as ``fit`` accepts), ``batch_size`` at a time, BatchNorm in eval mode (so
        an image's result does not depend on its batch). Float32 (N, 1, 28, 28) in [0, 1], on the device of a tensor
        ``x`` (the CPU for numpy arrays)."""
        vae = self._fitted()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise GatelabError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        x = check_pixels(x)
        out = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
        parts = [
            vae.purify(batch_of(x, slice(i, i + batch_size), self.device)).to(out)
            for i in range(0, x.shape[0], batch_size)
        ]
        return torch.cat(parts)

    def save(self, path: str | os.PathLike) -> Path:
        """The VAE's weights (safetensors) with the config, seed and history in the metadata."""
        meta = {"vae_config": asdict(self.config), "seed": self.seed, "history": self.history_}
        return save_weights(self._fitted(), path, meta)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> DefenseVAE:
        """A fitted DefenseVAE from ``save``, run on ``device``; a damaged or foreign file is a GatelabError."""
        what = "Defense-VAE purifier"
        meta, tensors = read_weights(path, what)
        config = config_from(VAEConfig, meta.get("vae_config"), path, what)
        seed, history = meta.get("seed", 0), meta.get("history", [])
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise GatelabError(f"{path}: seed {seed!r} is not an integer")
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise GatelabError(f"{path}: history is not a list of per-epoch records")
        purifier = cls(config, seed=seed, device=device)
        purifier.vae_ = load_weights(VAE18(config.latent), tensors, path, what).to(purifier.device).eval()
        purifier.history_ = history
        return purifier


class Defended(nn.Module):
    """``classifier(decode(mu(x)))``: the classifier on purified images (the paper's mode 1), differentiable end to
    end so that an adaptive attack can follow the gradient through the purifier.

    Built in eval mode, where it equals ``classifier(purifier.purify(x))``; in training mode the VAE's BatchNorm uses
    the batch's statistics, as the released reconstruction code did. ``purifier`` is a fitted DefenseVAE or a VAE18.
    """

    def __init__(self, classifier: nn.Module, purifier: DefenseVAE | VAE18):
        super().__init__()
        if not isinstance(classifier, nn.Module):
            raise GatelabError(f"classifier must be a torch nn.Module; got {type(classifier).__name__}")
        if isinstance(purifier, DefenseVAE):
            purifier = purifier._fitted()
        if not isinstance(purifier, VAE18):
            raise GatelabError(f"purifier must be a fitted DefenseVAE or a VAE18; got {type(purifier).__name__}")
        self.classifier = classifier
        self.vae = purifier
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.vae.decode(self.vae.encode(x)[0]))
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise GatelabError(
                f"the classifier must return logits (N, classes) for N = {x.shape[0]} images; got {tuple(logits.shape)}"
            )
        return logits
