"""The registry of reproductions and the function that runs one."""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gatelab.checkpoint import Interrupted
from gatelab.errors import GatelabError
from gatelab.files import write_json
from gatelab.reproduce.report import Report, setting_text

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
    """A paper's headline experiment: ``fn(report, quick, seed)`` fills the report.

    ``settings``: the quick and the full run's settings (two dicts with the same keys), for a reproduction whose
    settings a user may change one by one (``gatelab reproduce NAME --set KEY=VALUE``, read by ``fn`` from
    ``report.overrides``); None for one that takes no such changes.
    """

    name: str
    title: str
    paper: str
    fn: Callable[[Report, bool, int], None]
    settings: tuple[dict, dict] | None = None

    def parse_overrides(self, items: list[str]) -> dict:
        """``["KEY=VALUE", ...]`` as settings, each value of the type of the key's defaults (a comma-separated list
        for a tuple, ``none`` where a default is None); a clear error for an unknown key or a wrong value."""
        if not items:
            return {}
        if self.settings is None:
            raise GatelabError(f"reproduction {self.name!r} takes no --set settings")
        quick, full = self.settings
        out = {}
        for item in items:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or key not in full:
                what = f"{self.name} has no setting {key!r}" if sep else "no '=' in it"
                raise GatelabError(f"--set {item!r}: {what}; give KEY=VALUE, KEY one of: {', '.join(full)}")
            out[key] = _parse_setting(key, text.strip(), (quick[key], full[key]))
        return out


def _parse_setting(key: str, text: str, defaults: tuple):
    """``text`` as a value of the type of ``defaults`` (the quick and full values of setting ``key``)."""
    kinds = {type(v) for v in defaults if v is not None}
    if text.lower() in ("none", "all") and None in defaults:
        return None
    if tuple in kinds:  # a selection (models, say): distinct items among those the quick and full runs use
        choices = list(dict.fromkeys(item for v in defaults[::-1] if v is not None for item in v))
        parts = tuple(p.strip() for p in text.split(",") if p.strip())
        if parts and set(parts) <= set(choices) and len(set(parts)) == len(parts):
            return parts
        accepted = f"a comma-separated list of distinct items among {', '.join(choices)}"
    elif bool in kinds:
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        if text.lower() in words:
            return words[text.lower()]
        accepted = "true or false"
    elif int in kinds:
        if text.isdigit():
            return int(text)
        accepted = "a whole number >= 0"
    elif float in kinds:
        try:
            if math.isfinite(value := float(text)):
                return value
        except ValueError:
            pass
        accepted = "a finite number"
    else:
        return text
    accepted += " or none" if None in defaults else ""
    quick, full = map(setting_text, defaults)
    raise GatelabError(f"--set {key}={text}: {key} takes {accepted} (defaults: quick {quick}, full {full})")


_REGISTRY: dict[str, Reproduction] = {}


def register(name: str, title: str, paper: str, settings: tuple[dict, dict] | None = None):
    """Decorator that registers ``fn(report, quick, seed)`` as reproduction ``name`` (``settings``: see
    ``Reproduction``)."""

    def decorate(fn):
        if name in _REGISTRY:
            raise GatelabError(f"reproduction {name!r} is registered twice")
        if settings is not None and settings[0].keys() != settings[1].keys():
            raise GatelabError(f"reproduction {name!r}: its quick and full settings must have the same keys")
        _REGISTRY[name] = Reproduction(name, title, paper, fn, settings)
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
    overrides: list[str] | None = None,
) -> Path:
    """Run reproduction ``name`` into a fresh folder under ``out`` and return that folder.

    The run works in a hidden ``.partial`` folder that is renamed only when the
    report is complete, so an interrupted run never looks like a finished one.
    ``resume`` names such a folder: its finished stages are reused and the
    stage in progress continues from its checkpoint. ``overrides``: ``KEY=VALUE``
    changes to the reproduction's settings (``Reproduction.parse_overrides``).
    """
    rep = get(name)
    changed = rep.parse_overrides(overrides or [])
    settings = {"name": name, "quick": quick, "seed": seed}
    if changed:  # kept out of run.json when empty, so folders from before --set existed still resume
        settings["set"] = {k: setting_text(v) for k, v in changed.items()}
    command = _command(settings)
    if resume is not None:
        work = Path(resume)
        saved = _read_run_file(work)
        if saved != settings:
            raise GatelabError(
                f"{work} holds a run of {saved}, not of {settings}; resume it with those settings "
                f"({_command(saved)} --resume {work})"
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
        overrides=changed,
    )
    try:
        rep.fn(report, quick, seed)
    except Interrupted as exc:
        exc.hint = f"resume with: {command} --resume {work}"
        raise
    except GatelabError:
        if resume is None and [p.name for p in work.iterdir()] == ["run.json"]:
            shutil.rmtree(work)  # refused before it did anything: nothing to resume, nothing left behind
        raise
    report.write()
    os.replace(work, final)
    if echo:
        echo(report.table_markdown())
        echo(f"\nreport: {final / 'report.md'}")
    return final


def _command(settings: dict) -> str:
    """The command line that starts (or, with ``--resume``, continues) a run of these ``run.json`` settings."""
    words = [f"gatelab reproduce {settings.get('name')}"] + (["--quick"] if settings.get("quick") else [])
    words += [f"--seed {settings.get('seed')}"] + [f"--set {k}={v}" for k, v in settings.get("set", {}).items()]
    return " ".join(words)


def _read_run_file(work: Path) -> dict:
    if not work.is_dir():
        raise GatelabError(f"cannot resume {work}: it is not a folder (pass the .NAME-....partial folder of a run)")
    try:
        return json.loads((work / "run.json").read_text())
    except (OSError, ValueError) as exc:
        raise GatelabError(f"cannot resume {work}: it is not a reproduction run folder ({exc})") from None
