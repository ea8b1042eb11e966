"""Independent stages of a full reproduction trained side by side, one process of one thread each.

Small models use a second thread poorly, so on a machine with a few cores independent models finish sooner side by
side, one thread each, than one after the other with every thread. Each worker resumes its stage's checkpoint
(``Report.trainer_options``) and prints its per-epoch lines prefixed with the stage's key.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from gatelab.checkpoint import Checkpointer, Interrupted
from gatelab.errors import GatelabError
from gatelab.files import write_json
from gatelab.progress import prefixed_lines
from gatelab.reproduce.report import Report


def _worker(function: Callable[..., Any], args: tuple, folder: str, key: str, options: dict) -> None:
    """A worker process: one thread, ``function(*args, **options)``, its result written beside the stages."""
    torch.set_num_threads(1)
    try:
        with prefixed_lines(f"{key}: "):
            result = function(*args, **options)
    except Interrupted as exc:  # its checkpoint is saved; the parent says how to resume
        sys.exit(exc.exit_code)
    write_json(_result_path(Path(folder), key), {"result": result})


def _result_path(folder: Path, key: str) -> Path:
    return folder / "stages" / f"{key}.worker.json"


def run_in_workers(report: Report, jobs: dict[str, tuple[Callable[..., Any], tuple]], workers: int) -> None:
    """Run the unfinished stages of ``report`` in ``workers`` processes; each finished one becomes a stage.

    ``jobs`` maps a stage's key to ``(function, args)``: a module-level function (the processes are spawned, so
    it must be importable) called as ``function(*args, **report.trainer_options(key))`` that returns the stage's
    JSON-able result. Stages start in the order given. SIGINT or SIGTERM reaches every worker, which saves its
    checkpoint; then this process raises Interrupted, and ``--resume`` continues them all.
    """
    context = multiprocessing.get_context("spawn")
    waiting = [k for k in jobs if not (report.folder / "stages" / f"{k}.json").is_file()]
    running: dict[str, multiprocessing.Process] = {}
    with Checkpointer(None) as watch:
        while waiting or running:
            while waiting and len(running) < workers and not watch.stop_requested:
                key = waiting.pop(0)
                function, args = jobs[key]
                options = report.trainer_options(key)
                proc = context.Process(
                    target=_worker, args=(function, args, str(report.folder), key, options), name=key
                )
                proc.start()
                report.settings.setdefault("worker processes", workers)
                running[key] = proc
            time.sleep(0.2)
            if watch.stop_requested:
                for proc in running.values():
                    if proc.is_alive():
                        proc.terminate()  # SIGTERM: the worker saves its checkpoint and stops
                for proc in running.values():
                    proc.join()
                raise Interrupted(watch.signum, report.folder)
            for key, proc in list(running.items()):
                if proc.exitcode is None:
                    continue
                del running[key]
                if proc.exitcode != 0:
                    for other in running.values():
                        other.terminate()
                        other.join()
                    raise GatelabError(f"training {key} failed in its worker process (exit status {proc.exitcode})")
                path = _result_path(report.folder, key)
                result = json.loads(path.read_text())["result"]
                report.stage(key, lambda result=result: result)
                path.unlink()
