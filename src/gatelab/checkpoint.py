"""Training checkpoints that survive a crash, and a clean stop on Ctrl-C or SIGTERM.

Every trainer keeps one ``Checkpointer``. It writes the trainer's state (model,
optimiser, schedule, RNG states, position, history, config) atomically at the
end of each epoch and at most every ``every`` seconds inside an epoch. While it
is active, SIGINT and SIGTERM only raise a flag; at its next step the trainer
saves and raises ``Interrupted``, which the CLI turns into one line saying where
the checkpoint is and how to resume, and exit status 130 or 143.

    with Checkpointer(path, every=300) as ckpt:
        for epoch in ...:
            for batch in ...:
                ...
                ckpt.step(state)        # saves if due, stops if signalled
            ckpt.epoch_end(state)       # always saves

``state`` is a function returning the dict to save, so nothing is copied unless
a save happens. Checkpoints are read with ``torch.load(weights_only=True)``: a
foreign file cannot run code.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from gatelab.errors import GatelabError
from gatelab.files import atomic_path

State = Callable[[], dict]

_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


def rng_state() -> dict:
    """The torch, CUDA, numpy and Python random states, in a form ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states that ``rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` atomically (temporary name, fsync, rename), streamed: no second copy of it in memory."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return Path(path)


def load_state(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """Read a file written by ``save_state``; any failure is a GatelabError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise GatelabError(f"{what} {path} does not exist")
    try:  # torch warns about a foreign pickle protocol before failing: the error below says it in one line
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or corrupt: torch raises many kinds
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise GatelabError(
            f"{path} is not a readable gatelab {what} ({type(exc).__name__}: {reason}); "
            "it may be truncated: resume from an intact copy or start afresh"
        ) from None
    if not isinstance(state, dict) or "format" not in state:
        raise GatelabError(f"{path} is not a gatelab {what} (no 'format' entry)")
    return state


def checkpoint_beside(out: str | os.PathLike) -> Path:
    """Where a command writing ``out`` keeps its training checkpoint: ``OUT.checkpoint.pt`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".checkpoint.pt")


def check_resumable(
    state: Mapping[str, Any], fmt: str, config: Mapping[str, Any], path, may_differ=(), defaults=None
) -> None:
    """Refuse to resume a checkpoint of another kind, or one made with a different configuration.

    ``may_differ`` names config fields that a resumed run may change (say, ``epochs`` to train longer).
    ``defaults``: the config's default values, which fields that the checkpoint lacks (it was written before
    they existed) are taken to have had.
    """
    if state.get("format") != fmt:
        raise GatelabError(f"{path} is a {state.get('format')!r} checkpoint, not a {fmt!r} one")
    saved = {**(defaults or {}), **(state.get("config") or {})}
    diff = sorted(k for k in set(saved) | set(config) if k not in may_differ and saved.get(k) != config.get(k))
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {config.get(k)!r} now" for k in diff[:4])
        raise GatelabError(
            f"cannot resume {path} with a different configuration ({shown}); "
            "resume with the checkpoint's settings or start a new run"
        )


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after saving its checkpoint."""

    def __init__(self, signum: int, path: Path | None, hint: str | None = None):
        self.signum, self.path = signum, path
        self.hint = hint or (f"resume with --resume {path}" if path else None)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message  # the hint may be set after construction (a reproduction names its run folder)

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)

    @property
    def message(self) -> str:
        what = _SIGNAL_NAMES.get(self.signum, f"signal {self.signum}")
        if self.path is None:
            return f"stopped by {what}; no checkpoint was kept"
        return f"stopped by {what}; checkpoint saved to {self.path}; {self.hint}"


class Checkpointer:
    """Saves a trainer's state at each epoch end and every ``every`` seconds; stops cleanly on signals.

    ``path`` None keeps no checkpoint (signals still stop the run, with a message).
    """

    def __init__(self, path: str | os.PathLike | None, every: float = 300.0):
        if not every > 0:
            raise GatelabError(f"the checkpoint interval must be a positive number of seconds, got {every}")
        self.path = Path(path) if path is not None else None
        self.every = float(every)
        self.signum: int | None = None
        self._last = time.monotonic()
        self._previous: dict[int, Any] = {}

    # ---- signal handling: a flag only; the trainer acts on it at its next step
    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signum = signum

    def __enter__(self) -> "Checkpointer":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:  # an ignored signal (nohup, `&`) stays ignored
                    self._previous[sig] = signal.signal(sig, self._handle)
        self._last = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self.signum is not None and exc[0] is None:
            raise Interrupted(self.signum, None)  # signalled after the last step: still stop

    @property
    def stop_requested(self) -> bool:
        return self.signum is not None

    @property
    def save_due(self) -> bool:
        """Whether ``every`` seconds have passed since the last save (always False without a path)."""
        return self.path is not None and time.monotonic() - self._last >= self.every

    def save(self, state: State | Mapping[str, Any]) -> Path | None:
        """Write the state now (atomically); returns the path, or None when no path was given."""
        self._last = time.monotonic()
        if self.path is None:
            return None
        return save_state(self.path, state() if callable(state) else state)

    def _stop(self, state: State) -> None:
        signum, self.signum = self.signum, None
        self.save(state)
        raise Interrupted(signum, self.path)

    def step(self, state: State) -> None:
        """Call after each optimiser step: saves when ``every`` seconds have passed, stops when signalled."""
        if self.signum is not None:
            self._stop(state)
        if self.save_due:
            self.save(state)

    def epoch_end(self, state: State) -> None:
        """Call after each epoch: always saves, then stops if signalled."""
        self.save(state)
        if self.signum is not None:
            signum, self.signum = self.signum, None
            raise Interrupted(signum, self.path)
