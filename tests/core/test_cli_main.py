"""``gatelab.cli.main`` turns the library's errors, memory and disk failures and a stop by signal into one line on
stderr and its exit status; anything else (a bug) keeps its traceback."""

import argparse
import errno
import signal

import pytest

from gatelab import cli
from gatelab.checkpoint import Interrupted
from gatelab.errors import GatelabError


def _main_raising(monkeypatch, exc):
    """``cli.main`` over a one-command parser whose command raises ``exc``."""

    def build():
        parser = argparse.ArgumentParser(prog="gatelab")
        parser.set_defaults(func=lambda args: (_ for _ in ()).throw(exc))
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    return cli.main([])


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (GatelabError("bad input, accepted: x"), 2, "gatelab: error: bad input, accepted: x"),
        (MemoryError(), 2, "gatelab: error: out of memory; try a smaller batch, model or data set"),
        (
            RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"),
            2,
            "gatelab: error: out of memory; try a smaller batch, model or data set",
        ),
        (
            OSError(errno.ENOSPC, "No space left on device", "/full/out.bin"),
            2,
            "gatelab: error: cannot access /full/out.bin: No space left on device",
        ),
        (KeyboardInterrupt(), 130, "gatelab: interrupted"),
    ],
    ids=["library", "memory", "torch-allocation", "disk", "ctrl-c"],
)
def test_failures_are_one_line_and_an_exit_status(exc, code, line, monkeypatch, capsys):
    assert _main_raising(monkeypatch, exc) == code
    captured = capsys.readouterr()
    assert captured.err == line + "\n" and captured.out == ""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_by_signal_says_where_the_checkpoint_is(signum, monkeypatch, capsys, tmp_path):
    code = _main_raising(monkeypatch, Interrupted(signum, tmp_path / "run.checkpoint.pt"))
    err = capsys.readouterr().err
    assert code == 128 + signum and code in (130, 143)
    assert len(err.splitlines()) == 1 and str(tmp_path / "run.checkpoint.pt") in err and "--resume" in err


def test_a_bug_keeps_its_traceback(monkeypatch):
    with pytest.raises(RuntimeError, match="index out of range"):
        _main_raising(monkeypatch, RuntimeError("index out of range"))
