"""The report of one reproduction run: a table beside the paper, settings, plots."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

import gatelab
from gatelab.files import atomic_path, write_json, write_text


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gatelab": gatelab.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Report:
    """Collects rows (paper vs ours), settings, raw results and plots, then writes them."""

    def __init__(self, name: str, title: str, paper: str, folder: Path, quick: bool, seed: int):
        self.name, self.title, self.paper = name, title, paper
        self.folder = Path(folder)
        self.quick, self.seed = quick, seed
        self.rows: list[dict] = []
        self.settings: dict = {}
        self.results: dict = {}
        self.notes: list[str] = []
        self.plots: list[str] = []
        self._start = time.perf_counter()

    def row(self, what: str, paper=None, ours=None, note: str = "") -> None:
        """One line of the comparison table."""
        self.rows.append({"what": what, "paper": paper, "ours": ours, "note": note})

    def note(self, text: str) -> None:
        """A sentence for the report, e.g. where and why a target was missed."""
        self.notes.append(text)

    def save_figure(self, fig, filename: str) -> Path:
        """Save a matplotlib figure as PNG in the run folder."""
        import matplotlib.pyplot as plt

        path = self.folder / filename
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        self.plots.append(filename)
        return path

    def table_markdown(self) -> str:
        lines = [
            f"## {self.title}{' (quick)' if self.quick else ''}",
            "",
            "| | paper | ours | note |",
            "|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(f"| {r['what']} | {_fmt(r['paper'])} | {_fmt(r['ours'])} | {r['note']} |")
        return "\n".join(lines)

    def write(self) -> None:
        wall = time.perf_counter() - self._start
        info = machine()
        parts = [f"# {self.name}", "", f"Paper: {self.paper}", "", self.table_markdown(), ""]
        if self.notes:
            parts += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        parts += ["## Settings", "", f"- quick: {self.quick}", f"- seed: {self.seed}"]
        parts += [f"- {k}: {_fmt(v)}" for k, v in self.settings.items()]
        parts += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in info.items()]
        parts += ["", f"Wall time: {wall:.1f} s", ""]
        if self.plots:
            parts += ["## Plots", ""] + [f"![{p}]({p})" for p in self.plots] + [""]
        write_text(self.folder / "report.md", "\n".join(parts))
        write_json(
            self.folder / "results.json",
            {
                "name": self.name,
                "quick": self.quick,
                "seed": self.seed,
                "wall_seconds": wall,
                "table": self.rows,
                "settings": self.settings,
                "results": self.results,
                "notes": self.notes,
                "machine": info,
            },
        )
