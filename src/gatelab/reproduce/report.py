"""The report of one reproduction run: a table beside the paper, settings, plots."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

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


def setting_text(value) -> str:
    """A setting as ``gatelab reproduce --set KEY=VALUE`` takes it."""
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


class Report:
    """Collects rows (paper, reference, ours), settings, raw results and plots, then writes them.

    ``paper`` holds only what the cited paper itself states; ``reference`` holds
    other published or side-by-side numbers, each with its ``source``. A resumed
    run (``gatelab reproduce NAME --resume RUN_DIR``) reuses the results of the
    stages that finished (``stage``) and the checkpoint of the one in progress
    (``checkpoint``). ``overrides``: the settings the user changed with ``--set``,
    which the reproduction applies over its quick or full ones.
    """

    def __init__(
        self,
        name: str,
        title: str,
        paper: str,
        folder: Path,
        quick: bool,
        seed: int,
        device: str = "cpu",
        quiet: bool = False,
        checkpoint_every: float = 300.0,
        overrides: dict | None = None,
    ):
        self.name, self.title, self.paper = name, title, paper
        self.overrides = dict(overrides or {})
        self.folder = Path(folder)
        self.quick, self.seed, self.device, self.quiet = quick, seed, device, quiet
        self.checkpoint_every = checkpoint_every
        self.rows: list[dict] = []
        self.settings: dict = {}
        self.results: dict = {}
        self.notes: list[str] = []
        self.plots: list[str] = []
        self._start = time.perf_counter()
        wall_file = self.folder / "stages" / "wall.json"
        self._wall_before = json.loads(wall_file.read_text())["seconds"] if wall_file.is_file() else 0.0

    @property
    def wall_seconds(self) -> float:
        """Wall time of this run, counting the finished stages of the sessions it was resumed from."""
        return self._wall_before + time.perf_counter() - self._start

    def row(self, what: str, paper=None, ours=None, note: str = "", reference=None, source: str = "") -> None:
        """One line of the comparison table; a ``reference`` number needs its ``source``."""
        if reference is not None and not source:
            raise ValueError(f"row {what!r}: a reference number needs its source")
        self.rows.append(
            {
                "what": what,
                "paper": paper,
                "reference": reference,
                "reference_source": source,
                "ours": ours,
                "note": note,
            }
        )

    def stage(self, key: str, fn: Callable[[], Any]) -> Any:
        """``fn()``'s JSON-able result, computed once per run folder: a resumed run skips finished stages."""
        path = self.folder / "stages" / f"{key}.json"
        if path.is_file():
            return json.loads(path.read_text())["result"]
        result = fn()
        write_json(path, {"result": result})
        write_json(self.folder / "stages" / "wall.json", {"seconds": self.wall_seconds})
        return result

    def checkpoint(self, key: str) -> Path:
        """Where the trainer of stage ``key`` keeps its checkpoint (resumed from when it exists)."""
        path = self.folder / "checkpoints" / f"{key}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def trainer_options(self, key: str) -> dict:
        """The keyword arguments every trainer takes, for stage ``key``: its checkpoint (resumed from if a
        previous session left one), the checkpoint interval and ``quiet``."""
        path = self.checkpoint(key)
        resume = path if path.is_file() else None
        return {"checkpoint": path, "resume": resume, "checkpoint_every": self.checkpoint_every, "quiet": self.quiet}

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
            "| | paper | reference | ours | note |",
            "|---|---|---|---|---|",
        ]
        for r in self.rows:
            ref = _fmt(r["reference"]) + (f" ({r['reference_source']})" if r["reference"] is not None else "")
            lines.append(f"| {r['what']} | {_fmt(r['paper'])} | {ref} | {_fmt(r['ours'])} | {r['note']} |")
        lines += [
            "",
            "paper: only what the cited paper itself states; reference: other sources, each named; "
            "–: not stated there, or not found.",
        ]
        return "\n".join(lines)

    def write(self) -> None:
        wall = self.wall_seconds
        info = machine()
        parts = [f"# {self.name}", "", f"Paper: {self.paper}", "", self.table_markdown(), ""]
        if self.notes:
            parts += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        parts += ["## Settings", "", f"- quick: {self.quick}", f"- seed: {self.seed}", f"- device: {self.device}"]
        if self.overrides:
            parts += ["- changed with --set: " + " ".join(f"{k}={setting_text(v)}" for k, v in self.overrides.items())]
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
                "device": self.device,
                "overrides": self.overrides,
                "wall_seconds": wall,
                "table": self.rows,
                "settings": self.settings,
                "results": self.results,
                "notes": self.notes,
                "machine": info,
            },
        )
