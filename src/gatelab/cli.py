"""The ``gatelab`` command. Each system adds its subcommands from its own ``cli`` module."""

from __future__ import annotations

import argparse
import importlib
import sys

import gatelab

# Modules with a ``register(subparsers)`` function; a new system adds its module here.
COMMANDS = (
    "gatelab.gates.cli",
    "gatelab.npn.cli",
    "gatelab.nice.cli",
    "gatelab.defense.cli",
    "gatelab.embeddings.cli",
    "gatelab.embeddings.wordrank_cli",
    "gatelab.lm.cli",
    "gatelab.vi.cli",
    "gatelab.activity.cli",
    "gatelab.reproduce.cli",
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gatelab",
        description=gatelab.__doc__.splitlines()[0],
        epilog="Run `gatelab COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"gatelab {gatelab.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from gatelab.checkpoint import Interrupted
    from gatelab.errors import GatelabError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GatelabError as exc:
        print(f"gatelab: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"gatelab: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gatelab: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("gatelab: error: out of memory; try a smaller batch, model or data set", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # torch reports a failed allocation as a RuntimeError
        if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc):
            raise
        print("gatelab: error: out of memory; try a smaller batch, model or data set", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder, a vanished file: one line, never a traceback
        where = f" {exc.filename}" if exc.filename else ""
        print(f"gatelab: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
