"""Pictures people look at: image, NICE mask, each baseline's saliency and the compressed image, side by side."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from gatelab.files import atomic_path  # noqa: E402


def _save_png(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG via a temporary name, then close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _show(ax, image: torch.Tensor, cmap: str, title: str | None) -> None:
    image = image.detach().cpu()
    if image.dim() == 3:
        image = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
    vmax = float(image.max()) if cmap != "gray" else 1.0
    ax.imshow(image.numpy(), cmap=cmap if image.dim() == 2 else None, vmin=0, vmax=vmax or 1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def explanation_panels(
    path: str | os.PathLike, images: torch.Tensor, columns: dict[str, torch.Tensor], row_titles: list[str] | None = None
) -> Path:
    """A grid: one row per image, first the image, then one column per named map (N, C, H, W).

    Maps whose name contains "image" or "jpeg" are drawn in gray, the others as heat maps.
    """
    names = list(columns)
    rows = len(images)
    fig, axes = plt.subplots(rows, 1 + len(names), figsize=(1.5 * (1 + len(names)), 1.5 * rows + 0.3), squeeze=False)
    for r in range(rows):
        _show(axes[r, 0], images[r], "gray", "image" if r == 0 else None)
        if row_titles:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=7)
        for c, name in enumerate(names, start=1):
            gray = "image" in name or "jpeg" in name
            _show(axes[r, c], columns[name][r], "gray" if gray else "inferno", name if r == 0 else None)
    fig.tight_layout()
    return _save_png(fig, path)


def tradeoff_plot(path: str | os.PathLike, series: dict[str, list[dict]], paper_ratio: float | None = None) -> Path:
    """Accuracy on compressed images against size ratio: one NICE line per series (a classifier), one point per L0
    strength labelled by lambda, each beside plain JPEG's accuracy with the same classifier."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for i, (label, points) in enumerate(series.items()):
        color = f"C{i}"
        sizes, accuracies = [p["size_ratio"] for p in points], [100 * p["accuracy_mixed"] for p in points]
        ax.plot(sizes, accuracies, "o-", color=color, label=f"NICE, {label}")
        for p, size, acc in zip(points, sizes, accuracies):
            ax.annotate(f"λ={p['lam']:g}", (size, acc), fontsize=7, textcoords="offset points", xytext=(4, 4))
        ax.axhline(100 * points[0]["accuracy_plain"], color=color, ls="--", lw=0.8, label=f"plain JPEG, {label}")
    if paper_ratio is not None:
        ax.axvline(paper_ratio, color="gray", ls=":", label=f"paper, ~{paper_ratio}x")
    ax.set_xlabel("file size / plain JPEG file size")
    ax.set_ylabel("classifier accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save_png(fig, path)
