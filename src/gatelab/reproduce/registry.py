"""The registry of reproductions and the function that runs one."""

from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gatelab.checkpoint import Interrupted
from gatelab.errors import GatelabError
from gatelab.files import write_json
from gatelab.reproduce.report import Report

# Modules whose import registers reproductions; a new system adds its module here.
PROVIDERS = (
    "gatelab.gates.reproductions",
    "gatelab.npn.reproductions",
    "gatelab.nice.reproductions",
    "gatelab.lm.reproductions",
    "gatelab.defense.reproductions",
    "gatelab.vi.reproductions",
    "gatelab.embeddings.reproductions",
    "gatelab.activity.reproductions",
)


@dataclass(frozen=True)
class Reproduction:
    """A paper's headline experiment: ``fn(report, quick, seed)`` fills the report."""

    name: str
    title: str
    paper: str
    fn: Callable[[Report, bool, int], None]


_REGISTRY: dict[str, Reproduction] = {}


def register(name: str, title: str, paper: str):
    """Decorator that registers ``fn(report, quick, seed)`` as reproduction ``name``."""

    def decorate(fn):
        if name in _REGISTRY:
            raise GatelabError(f"reproduction {name!r} is registered twice")
        _REGISTRY[name] = Reproduction(name, title, paper, fn)
        return fn

    return decorate


def available() -> dict[str, Reproduction]:
    """All registered reproductions, by name."""
    for module in PROVIDERS:
        importlib.import_module(module)
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Reproduction:
    known = available()
    if name not in known:
        raise GatelabError(f"unknown reproduction {name!r}; accepted: {', '.join(known)}")
    return known[name]


def run(
    name: str,
    quick: bool = False,
    out: str | os.PathLike = "runs",
    seed: int = 0,
    device: str = "cpu",
    resume: str | os.PathLike | None = None,
    quiet: bool = False,
    checkpoint_every: float = 300.0,
    echo: Callable[[str], None] | None = print,
) -> Path:
    """Run reproduction ``name`` into a fresh folder under ``out`` and return that folder.

    The run works in a hidden ``.partial`` folder that is renamed only when the
    report is complete, so an interrupted run never looks like a finished one.
    ``resume`` names such a folder: its finished stages are reused and the
    stage in progress continues from its checkpoint.
    """
    rep = get(name)
    settings = {"name": name, "quick": quick, "seed": seed}
    if resume is not None:
        work = Path(resume)
        saved = _read_run_file(work)
        if saved != settings:
            raise GatelabError(
                f"{work} holds a run of {saved}, not of {settings}; resume it with those settings "
                f"(gatelab reproduce {saved.get('name')}{' --quick' if saved.get('quick') else ''} "
                f"--seed {saved.get('seed')} --resume {work})"
            )
        final = work.with_name(work.name[1:].removesuffix(".partial"))
        if final.exists():
            raise GatelabError(f"{final} already exists; move it away before resuming {work}")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        final = Path(out) / f"{name}{'-quick' if quick else ''}-{stamp}"
        n = 1
        while final.exists() or final.with_name(f".{final.name}.partial").exists():
            n += 1
            final = final.with_name(f"{name}{'-quick' if quick else ''}-{stamp}-{n}")
        work = final.with_name(f".{final.name}.partial")
        work.mkdir(parents=True)
        write_json(work / "run.json", settings)
    report = Report(
        rep.name,
        rep.title,
        rep.paper,
        work,
        quick=quick,
        seed=seed,
        device=device,
        quiet=quiet,
        checkpoint_every=checkpoint_every,
    )
    try:
        rep.fn(report, quick, seed)
    except Interrupted as exc:
        exc.hint = f"resume with: gatelab reproduce {name}{' --quick' if quick else ''} --seed {seed} --resume {work}"
        raise
    report.write()
    os.replace(work, final)
    if echo:
        echo(report.table_markdown())
        echo(f"\nreport: {final / 'report.md'}")
    return final


def _read_run_file(work: Path) -> dict:
    if not work.is_dir():
        raise GatelabError(f"cannot resume {work}: it is not a folder (pass the .NAME-....partial folder of a run)")
    try:
        return json.loads((work / "run.json").read_text())
    except (OSError, ValueError) as exc:
        raise GatelabError(f"cannot resume {work}: it is not a reproduction run folder ({exc})") from None
