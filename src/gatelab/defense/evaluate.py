"""Accuracy of a classifier under attack, with and without Defense-VAE's purification, as a table and a plot.

    table = evaluate(net, x_test, y_test, ["fgsm", "rand_fgsm", "cw"], purifier=purifier, adaptive=True)
    # {"clean": {"undefended": .99, "defense_vae": .98}, "fgsm": {...}, ..., "adaptive_pgd": {"defense_vae": ...}}
    accuracy_table_png(table, "accuracy.png")

The paper's attacks are white-box against the classifier alone and oblivious to the purifier: the adversarial images
are crafted on the classifier, then classified as they are ("undefended") and after purification ("defense_vae",
the paper's mode 1: the unchanged classifier on decode(mu(x))). The adaptive row is the honest test the paper lacks:
PGD (L∞, 40 steps of 0.01, random start) through ``Defended(classifier, purifier)``, so its gradient flows through the
VAE.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from gatelab.defense.attacks import ATTACKS, attack, check_eps, check_images, check_model
from gatelab.defense.purifier import Defended, DefenseVAE
from gatelab.errors import GatelabError, check_choice
from gatelab.files import atomic_path
from gatelab.progress import bar

ADAPTIVE = "adaptive_pgd"
"""Row name of the adaptive PGD through the purifier."""

COLUMNS = ("undefended", "defense_vae")


def evaluate(
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attacks,
    eps: float = 0.3,
    purifier: DefenseVAE | None = None,
    adaptive: bool = False,
    batch_size: int = 500,
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, dict[str, float]]:
    """Accuracy table {row: {"undefended": acc, "defense_vae": acc}}; rows "clean", each of ``attacks`` at ``eps``
    and, with ``adaptive``, "adaptive_pgd" (only a "defense_vae" column: it attacks the defended model).

    ``attacks`` are names of :data:`gatelab.defense.ATTACKS`, crafted white-box on ``classifier`` alone. Without a
    ``purifier`` the "defense_vae" column is left out. ``batch_size`` images are attacked at a time, on the
    classifier's device; ``seed`` fixes the random steps of the attacks (one seed per batch). Correct counts stay on
    the device and are read once at the end.
    """
    attacks = tuple(attacks)
    for name in attacks:
        check_choice("attack", name, ATTACKS)
    eps = check_eps(eps)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GatelabError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if purifier is not None and not isinstance(purifier, DefenseVAE):
        raise GatelabError(f"purifier must be a fitted DefenseVAE or None; got {type(purifier).__name__}")
    if adaptive and purifier is None:
        raise GatelabError("the adaptive attack goes through the purifier; pass purifier= or adaptive=False")
    check_images(images)
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(images),):
        raise GatelabError(f"labels must be an int64 tensor of shape ({len(images)},), one per image")
    check_model(classifier, images[:batch_size], labels[:batch_size])
    defended = Defended(classifier, purifier) if purifier is not None else None
    device = next(classifier.parameters()).device
    rows = ("clean", *attacks) + ((ADAPTIVE,) if adaptive else ())
    columns = COLUMNS if purifier is not None else COLUMNS[:1]
    correct = {
        row: {
            col: torch.zeros((), dtype=torch.long, device=device)
            for col in columns
            if row != ADAPTIVE or col != "undefended"
        }
        for row in rows
    }
    was_training = classifier.training
    classifier.eval()
    try:
        with bar(len(images) * len(rows), desc="evaluate", unit="img", quiet=quiet) as progress:
            for b, start in enumerate(range(0, len(images), batch_size)):
                x = images[start : start + batch_size].to(device)
                y = labels[start : start + batch_size].to(device)
                for row in rows:
                    if row == ADAPTIVE:
                        adv = attack(defended, x, y, "pgd", eps, seed=seed + b)
                        correct[row]["defense_vae"] += _correct(defended, adv, y)
                    else:
                        adv = x if row == "clean" else attack(classifier, x, y, row, eps, seed=seed + b)
                        correct[row]["undefended"] += _correct(classifier, adv, y)
                        if purifier is not None:
                            correct[row]["defense_vae"] += _correct(defended, adv, y)
                    progress.update(len(x))
    finally:
        classifier.train(was_training)
    return {row: {col: int(count) / len(images) for col, count in cols.items()} for row, cols in correct.items()}


@torch.no_grad()
def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (model(x).argmax(1) == y).sum()


def accuracy_table_png(table: dict[str, dict[str, float]], path: str | os.PathLike) -> Path:
    """A grouped bar chart of ``table`` (as :func:`evaluate` returns), one group per row, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(table, dict) or not table or not all(isinstance(v, dict) for v in table.values()):
        raise GatelabError("table must be a non-empty dict {row: {column: accuracy}}, as evaluate() returns")
    rows = list(table)
    columns = [c for c in COLUMNS if any(c in table[r] for r in rows)]
    columns += sorted({c for r in rows for c in table[r]} - set(columns))
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 3.5))
    try:
        for k, col in enumerate(columns):
            xs = [i + (k - (len(columns) - 1) / 2) * width for i, r in enumerate(rows) if col in table[r]]
            values = [100 * table[r][col] for r in rows if col in table[r]]
            bars = ax.bar(xs, values, width, label=col.replace("_", " "))
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(range(len(rows)), [r.replace("_", " ") for r in rows])
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 105)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)
    return Path(path)
