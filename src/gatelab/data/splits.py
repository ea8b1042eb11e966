"""Validation splits carved from training data, so that no choice made while training reads the test split."""

from __future__ import annotations

import torch

from gatelab.data.mnist import mnist_tensors
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


def image_splits(
    dataset: str, val_size: int, seed: int = 0, train_examples: int | None = None, root=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_val, y_val)`` of an image data set's training split.

    ``val_size`` images (seeded by ``seed``) are held out for validation;
    ``train_examples`` then keeps only the first N of the rest (None: all). The
    test split is not read.
    """
    x, y = mnist_tensors(dataset, "train", root)
    train, val = validation_split(len(x), val_size, seed)
    if train_examples is not None:
        if not 1 <= train_examples <= len(train):
            raise GatelabError(
                f"train_examples {train_examples} is outside [1, {len(train)}]: {len(train)} training images "
                f"are left after the {val_size}-image validation split"
            )
        train = train[:train_examples]
    return x[train], y[train], x[val], y[val]
