"""Bad input to any ``gatelab`` command gives one line on stderr and exit status 2, never a traceback.

A bounded version of ``tools/probe_cli.py`` (issue 10, section 6), run in this process through
``gatelab.cli.main``. The cases come from the parser tree, so a new command or option is covered
without editing this file: for each command, its first input path given a missing file and a file
of random bytes, one out-of-range number, and an output path through a regular file. The last
runs with ``--epochs 1000`` (where the command has it): a command that checks its output only
after training is still working when the guard below ends it, and the test fails saying so.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import signal
import sys
from pathlib import Path

import pytest

from gatelab.cli import build_parser, main

_spec = importlib.util.spec_from_file_location(
    "probe_cli", Path(__file__).resolve().parents[2] / "tools" / "probe_cli.py"
)
probe_cli = importlib.util.module_from_spec(_spec)
sys.modules["probe_cli"] = probe_cli  # dataclasses look their module up by name
_spec.loader.exec_module(probe_cli)

GUARD_SECONDS = 30  # a hang guard, not a speed check: a refusal needs no training at all


def _cases():
    commands = dict(probe_cli.leaf_commands(build_parser()))
    for command, parser in commands.items():
        actions = [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]
        inputs = [(a, k) for a in actions if (k := probe_cli.input_kind(command, a, commands))]
        if inputs:
            action, kind = inputs[0]
            yield command, action.dest, "missing"
            if kind != "dir":
                yield command, action.dest, "random"
        numbers = [a for a in actions if probe_cli.number_kind(a)]
        unchecked = [a for a in numbers if getattr(a.type, "__module__", "") != "gatelab.options"]
        if numbers:  # prefer a number that argparse does not already check
            yield command, (unchecked or numbers)[0].dest, "number"
        outputs = [a for a in actions if probe_cli.is_output(a)]
        if outputs:
            yield command, outputs[0].dest, "out"


CASES = list(_cases())


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """The probe's fixture maker, running the commands that make valid inputs in this process."""
    args = argparse.Namespace(
        work=str(tmp_path_factory.mktemp("probe")),
        spawn=False,
        timeout=120,
        out_timeout=GUARD_SECONDS,
        jobs=1,
        keep=False,
        quiet=True,
        in_domain=False,
    )
    p = probe_cli.Probe(args)
    p.runner = probe_cli.InProcessRunner()
    return p


class _StillWorking(BaseException):
    """Raised by the guard's alarm inside a command that should have stopped long before."""


def _run(argv: list[str]) -> int:
    def alarm(signum, frame):
        raise _StillWorking

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(GUARD_SECONDS)
    try:
        return main(argv)
    except SystemExit as exc:  # argparse
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except _StillWorking:
        pytest.fail(f"still working after {GUARD_SECONDS}s on bad input: gatelab {' '.join(argv)}")
    except Exception as exc:
        pytest.fail(f"uncaught {type(exc).__name__}: {exc} from: gatelab {' '.join(argv)}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(("command", "dest", "what"), CASES, ids=[f"{c}:{d}:{w}" for c, d, w in CASES])
def test_bad_input_is_refused_in_one_line(command, dest, what, probe, tmp_path, capsys, monkeypatch):
    action = next(a for a in probe._actions(command) if a.dest == dest)
    kind = probe_cli.input_kind(command, action, probe.commands)
    if what == "missing":
        value = str(tmp_path / "no-such-folder" / f"missing{probe.suffix_for(kind)}")
    elif what == "random":
        path = tmp_path / f"random{probe.suffix_for(kind)}"
        path.write_bytes(random.Random(0).randbytes(4096))
        value = str(path)
    elif what == "number":
        value = "-1" if probe_cli.number_kind(action) == "int" else "nan"
    else:
        regular = tmp_path / "regular-file"
        regular.write_text("a file, not a folder\n")
        value = str(regular / f"out{'' if probe_cli.output_kind(action) == 'dir' else probe._out_suffix(action)}")
    argv = probe.baseline(command, tmp_path / "run", long=what == "out", replace=(action, value))
    if argv is None:
        pytest.skip(f"no valid input could be made for the other arguments of {command}")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = _run(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    shown = f"gatelab {' '.join(argv)} -> exit {code}, stderr: {err[-600:]!r}"
    assert "Traceback" not in err, shown
    if kind == "text" and what == "random" and code == 0:  # a loud warning is an accepted answer for text
        assert any("warn" in line.lower() for line in lines), shown
        return
    assert code == 2, shown
    assert len(lines) == 1 and lines[0].startswith("gatelab"), shown


@pytest.mark.parametrize("command", sorted({c for c, _, _ in CASES}))
def test_every_baseline_is_a_valid_command_line(command, probe, tmp_path, capsys):
    """The valid command line each case edits parses: a cheap setting the command refuses (a count where it takes
    a fraction) would make every case of that command refused for the wrong reason, and pass."""
    argv = probe.baseline(command, tmp_path / "run")
    if argv is None:
        pytest.skip(f"no valid input could be made for {command}")
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"gatelab {' '.join(argv)} is refused: {capsys.readouterr().err.strip()}")


def test_cases_cover_every_command():
    """Every command is probed, and every command with an --out has its output case."""
    commands = dict(probe_cli.leaf_commands(build_parser()))
    probed = {c for c, _, _ in CASES}
    assert probed == set(commands)
    with_out = {c for c, p in commands.items() if any(a.dest == "out" for a in p._actions)}
    assert with_out <= {c for c, _, w in CASES if w == "out"}


def test_one_vocabulary_and_every_default_stated():
    """Every optional flag of every command says what happens when it is not given; every trainer takes
    the same run flags; --lam is never also --lambda."""
    missing, commands = [], {}

    def walk(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*prefix, name])
        if prefix and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            commands[" ".join(prefix)] = set(parser._option_string_actions)
        for action in parser._actions:
            if action.option_strings and not action.required:
                if not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                    if "default" not in (action.help or "").lower():
                        missing.append(f"{' '.join(prefix)} {action.option_strings[0]}")

    walk(build_parser(), [])
    assert not missing
    trainers = [c for c in commands if c.split()[-1] in ("train", "train-classifier")]
    assert sorted(trainers) == [
        "activity train",
        "defense train",
        "defense train-classifier",
        "gates train",
        "lm train",
        "nice train",
        "nice train-classifier",
        "npn train",
        "word2vec train",
        "wordrank train",
    ]
    run_flags = {"--seed", "--device", "--quiet", "--out", "--resume", "--checkpoint-every", "--log-dir"}
    assert all(run_flags <= commands[c] for c in trainers), {c: run_flags - commands[c] for c in trainers}
    assert all({"--seed", "--device", "--quiet"} <= commands[c] for c in ("nice explain", "nice compress"))
    assert not [c for c, flags in commands.items() if "--lambda" in flags]
