"""Validation splits carved from training data, so that no choice made while training reads the test split."""

from __future__ import annotations

import torch

from gatelab.errors import GatelabError


def validation_split(n: int, size: int | float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, disjoint index tensors ``(train, validation)`` over ``range(n)``.

    ``size`` is a count of examples (an int >= 1) or a fraction in (0, 1). The
    same ``n``, ``size`` and ``seed`` always give the same split, whatever the
    global random state.
    """
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise GatelabError(f"validation size must be a count or a fraction, got {size!r}")
    count = round(size * n) if isinstance(size, float) and size < 1 else int(size)
    if not (isinstance(size, int) or 0 < size < 1) or not 1 <= count < n:
        raise GatelabError(
            f"validation size {size!r} leaves no training or no validation data of {n} "
            "examples; give a count in [1, n) or a fraction in (0, 1)"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[count:].sort().values, order[:count].sort().values
