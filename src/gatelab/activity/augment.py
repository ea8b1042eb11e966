"""The paper's first two training aids on batches of skeletons (B, T, J, 3), on the batch's device.

The paper (Sarker et al., 2018) names data augmentation and dynamic frame dropout without their definitions in
any text we could read (only the abstract), so these are the standard readings, as the issue states them:

- augmentation: a random rotation about the vertical (y) axis, an isotropic scaling, a translation, Gaussian joint
  jitter, and a temporal crop resampled back to the full length, each drawn per sequence;
- dynamic frame dropout: at every step each sequence keeps a fresh random subset of its frames, in order, at a fixed
  rate, so the model never sees the same timing twice.

Random numbers come from torch's global generator, which checkpoints save and restore.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gatelab.errors import GatelabError


@dataclass
class AugmentConfig:
    """Ranges of the random transforms: rotation in degrees (±), scale (±fraction), translation and jitter in
    body lengths (the normalised unit), and the shortest temporal crop as a fraction of the clip."""

    rotation: float = 45.0
    scale: float = 0.2
    translation: float = 0.2
    jitter: float = 0.02
    crop: float = 0.7

    def validate(self) -> "AugmentConfig":
        for name in ("rotation", "scale", "translation", "jitter"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise GatelabError(f"augmentation {name} must be a finite number >= 0, got {value}")
        if not self.scale < 1:
            raise GatelabError(f"augmentation scale must be below 1 (a fraction), got {self.scale}")
        if not 0 < self.crop <= 1:
            raise GatelabError(f"augmentation crop must be in (0, 1], got {self.crop}")
        return self


def rotate_y(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate each sequence about the vertical axis by ``angles`` (radians, shape (B,))."""
    c, s = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    px, py, pz = x.unbind(-1)
    return torch.stack((c * px + s * pz, py, -s * px + c * pz), dim=-1)


def scale(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Multiply each sequence's coordinates by ``factors`` (B,): bone lengths scale by the same factor."""
    return x * factors[:, None, None, None]


def translate(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Shift each sequence by ``offsets`` (B, 3)."""
    return x + offsets[:, None, None, :]


def temporal_crop(x: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each sequence's window [start, start + length] (in frames, fractional) resampled to T frames."""
    b, t = x.shape[:2]
    pos = starts[:, None] + lengths[:, None] * torch.linspace(0, 1, t, device=x.device, dtype=x.dtype)[None]
    pos = pos.clamp(0, t - 1)
    lo = pos.floor().long().clamp(max=t - 1)
    hi = (lo + 1).clamp(max=t - 1)
    w = (pos - lo)[..., None, None]
    rows = torch.arange(b, device=x.device)[:, None]
    return (1 - w) * x[rows, lo] + w * x[rows, hi]


def augment(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """A randomly transformed copy of the batch ``x`` (B, T, J, 3): crop, rotation, scaling, translation, jitter."""
    b, t = x.shape[:2]
    dev = x.device
    if cfg.crop < 1:
        lengths = (t - 1) * (cfg.crop + (1 - cfg.crop) * torch.rand(b, device=dev))
        starts = (t - 1 - lengths) * torch.rand(b, device=dev)
        x = temporal_crop(x, starts, lengths)
    x = rotate_y(x, math.radians(cfg.rotation) * (2 * torch.rand(b, device=dev) - 1))
    x = scale(x, 1 + cfg.scale * (2 * torch.rand(b, device=dev) - 1))
    x = translate(x, cfg.translation * (2 * torch.rand(b, 3, device=dev) - 1))
    return x + cfg.jitter * torch.randn_like(x)


def kept_frames(frames: int, rate: float) -> int:
    """How many of ``frames`` frames survive dropout at ``rate`` (at least 2, so motion remains)."""
    if not 0 <= rate < 1:
        raise GatelabError(f"frame dropout rate must be in [0, 1), got {rate}")
    return max(2, min(frames, round(frames * (1 - rate))))


def frame_dropout(x: torch.Tensor, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop ``rate`` of the frames of every sequence (a fresh random subset each, order kept).

    Returns the kept frames (B, T', J, C) and their indices (B, T'), T' = ``kept_frames(T, rate)``.
    """
    b, t = x.shape[:2]
    keep = kept_frames(t, rate)
    idx = torch.rand(b, t, device=x.device).argsort(dim=1)[:, :keep].sort(dim=1).values
    return x[torch.arange(b, device=x.device)[:, None], idx], idx
