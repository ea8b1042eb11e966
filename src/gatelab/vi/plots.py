"""ELBO and held-out quality against wall-clock time, one curve per algorithm or peer."""

from __future__ import annotations


def history_figure(histories: dict[str, list[dict]], metric: str, title: str = ""):
    """A matplotlib figure: ``metric`` (and the ELBO where recorded) against time for each named history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_elbo = any("elbo" in h for hist in histories.values() for h in hist)
    fig, axes = plt.subplots(1, 2 if with_elbo else 1, figsize=(11 if with_elbo else 6, 4), squeeze=False)
    panels = [(axes[0][0], metric)] + ([(axes[0][1], "elbo")] if with_elbo else [])
    for ax, key in panels:
        for name, hist in histories.items():
            points = [(h["time"], h[key]) for h in hist if key in h]
            if points:
                ax.plot(*zip(*points), marker=".", label=name)
        ax.set_xlabel("wall-clock seconds")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
