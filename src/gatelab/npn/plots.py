"""Pictures of plasticity: active units over training, transition rates, decision boundaries."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from gatelab.npn.plasticity import PlasticityLog  # noqa: E402


def _stage_shading(ax, log: PlasticityLog) -> None:
    for i, stage in enumerate(log.stage):
        if stage == "hardening":
            ax.axvspan(log.epoch[i] - 0.5, log.epoch[-1] + 0.5, color="grey", alpha=0.12, label="hardening")
            break


def active_units_figure(logs: dict[str, PlasticityLog]):
    """Active units per layer over training, one panel per run (e.g. expansion and pruning side by side)."""
    fig, axes = plt.subplots(1, len(logs), figsize=(5 * len(logs), 3.6), squeeze=False, sharey=True)
    for ax, (title, log) in zip(axes[0], logs.items()):
        for name in log.total:
            ax.plot(log.epoch, log.active[name], label=f"{name} (of {log.total[name]})")
        _stage_shading(ax, log)
        ax.set(title=title, xlabel="epoch", ylabel="active units")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def transition_rate_figure(logs: dict[str, PlasticityLog]):
    """Fraction of units switching on or off in each epoch."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for title, log in logs.items():
        ax.plot(log.epoch, log.transition_rate(), label=title)
    ax.set(xlabel="epoch", ylabel="units switching / all units", title="transition rate")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


@torch.no_grad()
def decision_boundaries_figure(
    snapshots: dict[str, list[tuple[int, str, torch.nn.Module]]], x: torch.Tensor, y: torch.Tensor
):
    """Rows of decision-boundary panels: for each run, the model at several epochs, with the data."""
    rows = len(snapshots)
    cols = max(len(v) for v in snapshots.values())
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    lo, hi = x.min(0).values - 0.5, x.max(0).values + 0.5
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], 150), torch.linspace(lo[1], hi[1], 150), indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    for r, (title, snaps) in enumerate(snapshots.items()):
        for c, (epoch, arch, model) in enumerate(snaps):
            ax = axes[r][c]
            model.eval()
            prob = torch.softmax(model(grid), 1)[:, 1].reshape(gx.shape)
            ax.contourf(gx, gy, prob, levels=20, cmap="coolwarm", alpha=0.6)
            ax.contour(gx, gy, prob, levels=[0.5], colors="k", linewidths=1)
            ax.scatter(x[:, 0], x[:, 1], c=y, cmap="coolwarm", s=4, edgecolors="none")
            ax.set_title(f"{title}: epoch {epoch}\nactive {arch}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        for c in range(len(snaps), cols):
            axes[r][c].axis("off")
    fig.tight_layout()
    return fig
