"""The registry of reproductions and the function that runs one."""

from __future__ import annotations

import importlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gatelab.errors import GatelabError
from gatelab.reproduce.report import Report

# Modules whose import registers reproductions; a new system adds its module here.
PROVIDERS = (
    "gatelab.gates.reproductions",
    "gatelab.npn.reproductions",
    "gatelab.nice.reproductions",
    "gatelab.lm.reproductions",
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
    echo: Callable[[str], None] | None = print,
) -> Path:
    """Run reproduction ``name`` into a fresh folder under ``out`` and return that folder.

    The run works in a hidden ``.partial`` folder that is renamed only when the
    report is complete, so an interrupted run never looks like a finished one.
    """
    rep = get(name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    final = Path(out) / f"{name}{'-quick' if quick else ''}-{stamp}"
    n = 1
    while final.exists():
        n += 1
        final = final.with_name(f"{name}{'-quick' if quick else ''}-{stamp}-{n}")
    work = final.with_name(f".{final.name}.partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    report = Report(rep.name, rep.title, rep.paper, work, quick=quick, seed=seed)
    rep.fn(report, quick, seed)
    report.write()
    os.replace(work, final)
    if echo:
        echo(report.table_markdown())
        echo(f"\nreport: {final / 'report.md'}")
    return final
