"""Accuracy of a classifier under attack, with and without Defense-VAE's purification, as a table and a plot.

    table = evaluate(net, x_test, y_test, WHITE_BOX, purifier=purifier, adaptive=True)
    # {"clean": {"undefended": .99, "defense_vae": .98}, "fgsm": {...}, ..., "adaptive_pgd": {...}}
    accuracy_table_png(table, "accuracy.png")

The paper's attacks are white-box against the classifier alone and oblivious to the purifier: the adversarial images
are crafted on the classifier, then classified as they are ("undefended") and after purification ("defense_vae",
the paper's mode 1: the unchanged classifier on decode(mu(x))); more defences (modes 2 and 3, adversarial training)
are more columns. The adaptive row is the honest test the paper lacks: PGD (L∞, 40 steps of 0.01, random start)
through ``Defended(classifier, purifier)``, so its gradient flows through the VAE. The black-box row is FGSM crafted
on a Papernot substitute (``train_substitute``) and transferred.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from gatelab.defense.attacks import ATTACKS, attack, check_eps, check_images, check_model
from gatelab.defense.pairs import PAPER_ATTACKS
from gatelab.defense.purifier import Defended, DefenseVAE
from gatelab.errors import GatelabError, check_choice
from gatelab.files import atomic_path
from gatelab.progress import bar

WHITE_BOX = (*PAPER_ATTACKS, "cw")
"""The white-box columns reported by default: the paper's attacks (its CW with the softmax margin) and CW-L2 on
logits, the attack as designed, beside it."""

ADAPTIVE = "adaptive_pgd"
"""Row name of the adaptive PGD through the whole defended model."""

BLACK_BOX = "black_box_fgsm"
"""Row name of FGSM crafted on a substitute and transferred."""

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
    *,
    defences: dict | None = None,
    substitute: nn.Module | None = None,
    adaptive_images: int | None = None,
) -> dict[str, dict[str, float]]:
    """Accuracy table {row: {column: acc}}: rows "clean", each of ``attacks`` at ``eps``, with a ``substitute``
    "black_box_fgsm", and with ``adaptive`` "adaptive_pgd"; one column per defence.

    Columns: "undefended" (``classifier``), "defense_vae" (``classifier`` on ``purifier``'s output, mode 1) when a
    ``purifier`` is given, and one per entry of ``defences`` {name: (classifier, purifier or None)} (modes 2 and 3,
    an adversarially trained model...). Each defence's white-box attacks are crafted on its own classifier alone,
    oblivious to its purifier (as in the paper; crafted once per distinct classifier); "black_box_fgsm" is FGSM at
    ``eps`` crafted on ``substitute`` with its own predictions as labels, shown to every defence; "adaptive_pgd" is
    PGD (L∞ ``eps``, 40 steps of 0.01, random start) through the whole defended model, purifier included, on the
    first ``adaptive_images`` images only (None: all; it is the costly row).

    ``attacks`` are names of :data:`gatelab.defense.ATTACKS`. ``batch_size`` images are attacked at a time, on the
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
    check_images(images)
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(images),):
        raise GatelabError(f"labels must be an int64 tensor of shape ({len(images)},), one per image")
    n_adaptive = len(images) if adaptive_images is None else adaptive_images
    if isinstance(n_adaptive, bool) or not isinstance(n_adaptive, int) or not 1 <= n_adaptive <= len(images):
        raise GatelabError(f"adaptive_images must be an integer in [1, {len(images)}] or None, got {adaptive_images!r}")
    columns = {"undefended": (classifier, None)}
    if purifier is not None:
        columns["defense_vae"] = (classifier, purifier)
    for name, pair in (defences or {}).items():
        if name in columns or not isinstance(pair, tuple) or len(pair) != 2:
            raise GatelabError(f"defences must map new names to (classifier, purifier or None); got {name!r}")
        columns[name] = pair
    models = {}
    for name, (net, pur) in columns.items():
        check_model(net, images[:batch_size], labels[:batch_size])
        models[name] = Defended(net, pur) if pur is not None else net
    if substitute is not None:
        check_model(substitute, images[:batch_size], labels[:batch_size])
    device = next(classifier.parameters()).device
    rows = ("clean", *attacks) + ((BLACK_BOX,) if substitute is not None else ()) + ((ADAPTIVE,) if adaptive else ())
    correct = {row: {col: torch.zeros((), dtype=torch.long, device=device) for col in columns} for row in rows}
    modes = {m: m.training for m in [*models.values(), *(c for c, _ in columns.values())]}
    for m in modes:
        m.eval()
    try:
        with bar(len(images) * len(rows), desc="evaluate", unit="img", quiet=quiet) as progress:
            for b, start in enumerate(range(0, len(images), batch_size)):
                x = images[start : start + batch_size].to(device)
                y = labels[start : start + batch_size].to(device)
                for row in rows:
                    if row == BLACK_BOX:
                        with torch.no_grad():
                            guess = substitute(x).argmax(1)
                        shared = attack(substitute, x, guess, "fgsm", eps, seed=seed + b)
                    crafted = {}  # white-box adversarial images per classifier
                    for col, (net, _) in columns.items():
                        if row == ADAPTIVE:
                            k = min(len(x), max(0, n_adaptive - start))
                            if k:
                                adv = attack(models[col], x[:k], y[:k], "pgd", eps, seed=seed + b)
                                correct[row][col] += _correct(models[col], adv, y[:k])
                            continue
                        if row == "clean":
                            adv = x
                        elif row == BLACK_BOX:
                            adv = shared
                        elif id(net) not in crafted:
                            adv = crafted[id(net)] = attack(net, x, y, row, eps, seed=seed + b)
                        else:
                            adv = crafted[id(net)]
                        correct[row][col] += _correct(models[col], adv, y)
                    progress.update(len(x))
    finally:
        for m, training in modes.items():
            m.train(training)
    counts = {row: n_adaptive if row == ADAPTIVE else len(images) for row in rows}
    return {row: {col: int(count) / counts[row] for col, count in cols.items()} for row, cols in correct.items()}


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
