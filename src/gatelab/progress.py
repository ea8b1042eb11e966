"""Progress for long work: one bar helper, one per-epoch line, and optional TensorBoard scalars.

Bars (tqdm) show on a terminal and disappear when stderr is a file or with
``quiet``; per-epoch lines always go to stderr (unless ``quiet``), so a run
written to a log file still says where it is, one line an epoch.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator

from tqdm.auto import tqdm

from gatelab.errors import GatelabError


def bar(total: int | None = None, desc: str | None = None, unit: str = "it", quiet: bool = False, **kw) -> tqdm:
    """A tqdm bar on stderr, shown only on a terminal and when not ``quiet``."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=quiet or not sys.stderr.isatty(),
        dynamic_ncols=True,
        leave=False,
        file=sys.stderr,
        **kw,
    )


def say(message: str, quiet: bool = False) -> None:
    """One line on stderr (above any bar), e.g. an epoch's summary."""
    if not quiet:
        tqdm.write(message, file=sys.stderr)
        sys.stderr.flush()


class _PrefixedLines:
    """A stream that starts every line it writes with ``prefix``, and is no terminal (so bars stay off)."""

    def __init__(self, stream, prefix: str):
        self.stream, self.prefix, self.at_line_start = stream, prefix, True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            if self.at_line_start:
                self.stream.write(self.prefix)
            self.stream.write(piece)
            self.at_line_start = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def prefixed_lines(prefix: str) -> Iterator[None]:
    """Progress of one of several processes sharing a terminal: its per-epoch lines start with ``prefix`` and its
    bars are off, since bars of parallel workers would overwrite each other."""
    saved = sys.stderr
    sys.stderr = _PrefixedLines(saved, prefix)
    try:
        yield
    finally:
        sys.stderr = saved


class ScalarLog:
    """TensorBoard scalars under ``log_dir`` (``--log-dir``); does nothing when ``log_dir`` is None.

    Needs the ``tensorboard`` package (``pip install 'gatelab[tensorboard]'``).
    """

    def __init__(self, log_dir: str | None):
        self._writer = None
        if log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise GatelabError(
                "--log-dir needs TensorBoard, which is not installed; install it with "
                "pip install 'gatelab[tensorboard]' (or pip install tensorboard)"
            ) from None
        self._writer = SummaryWriter(log_dir=str(log_dir))

    def add(self, step: int, **scalars: Any) -> None:
        """Log each ``name=value`` (numbers; None is skipped) at ``step``."""
        if self._writer is None:
            return
        for name, value in scalars.items():
            if value is not None:
                self._writer.add_scalar(name, float(value), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> "ScalarLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
