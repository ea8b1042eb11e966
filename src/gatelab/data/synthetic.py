"""Seeded synthetic data sets (always labelled synthetic where they are used)."""

from __future__ import annotations

import math

import torch

from gatelab.errors import GatelabError


def two_moons(n: int = 1000, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaving half circles in 2-D, ``n`` points, class 0 on top and class 1 below."""
    if n < 2:
        raise GatelabError(f"two_moons needs at least 2 points, got {n}")
    if noise < 0:
        raise GatelabError(f"noise must be >= 0, got {noise}")
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    angle = torch.rand(n, generator=g) * math.pi
    upper = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    lower = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], 1)
    x = torch.where(labels[:, None] == 0, upper, lower) + noise * torch.randn(n, 2, generator=g)
    return x - torch.tensor([0.5, 0.25]), labels
