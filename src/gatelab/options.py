"""Command-line vocabulary shared by every ``gatelab`` command: checked number types and the common flags.

The same flag means the same thing everywhere (``--seed``, ``--device``,
``--quiet``, ``--resume``, ``--checkpoint-every``, ``--log-dir``). Numbers are
checked when parsed: NaN, infinities, 0 or negatives where they make no sense
are refused with one line and exit status 2, never read as "all" or "default".
"""

from __future__ import annotations

import argparse
import math
from typing import Callable

from gatelab.errors import GatelabError


def _number(cast: type, accepted: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = cast(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}")
        return value

    parse.__name__ = accepted
    return parse


INT_MAX = 2**31 - 1  # beyond this a count is a typo, and C and numba integers overflow
positive_int = _number(int, "an integer in [1, 2**31 - 1]", lambda v: 1 <= v <= INT_MAX)
nonnegative_int = _number(int, "an integer in [0, 2**31 - 1]", lambda v: 0 <= v <= INT_MAX)
positive_float = _number(float, "a finite number > 0", lambda v: v > 0)
nonnegative_float = _number(float, "a finite number >= 0", lambda v: v >= 0)
finite_float = _number(float, "a finite number", lambda v: True)
probability = _number(float, "a probability in (0, 1)", lambda v: 0 < v < 1)
fraction = _number(float, "a fraction in (0, 1]", lambda v: 0 < v <= 1)
unit_interval = _number(float, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def count_or_fraction(text: str) -> int | float:
    """A count (an integer >= 1) or a fraction in (0, 1): how much of the training data to hold out."""
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        return probability(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a count >= 1 or a fraction in (0, 1), got {text!r}") from None


def float_list(text: str) -> float | list[float]:
    """A finite number, or comma-separated finite numbers (one per layer): ``0.1`` or ``10,0.5,0.1,10``."""
    parse = _number(float, "a finite number or comma-separated finite numbers", lambda v: True)
    values = [parse(v) for v in text.split(",")]
    return values[0] if len(values) == 1 else values


def output_folder(text: str) -> str:
    """An argparse type: a folder that can be created or written (checked now, before any work)."""
    return _checked_output(text, "dir")


def output_file(text: str) -> str:
    """An argparse type: a file that can be created or replaced (checked now, before any work)."""
    return _checked_output(text, "file")


def _checked_output(text: str, kind: str) -> str:
    from gatelab.files import check_output_path

    try:
        check_output_path(text, kind=kind)
    except GatelabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def device_name(text: str) -> str:
    """An argparse type: a device torch can use here (see ``gatelab.devices.resolve_device``)."""
    from gatelab.devices import resolve_device

    try:
        resolve_device(text)
    except GatelabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


seed_int = _number(int, "an integer in [0, 2**32 - 1]", lambda v: 0 <= v < 2**32)


def add_common(parser: argparse.ArgumentParser, *, device: bool = True, seed: bool = True) -> None:
    """``--seed``, ``--device`` and ``--quiet``, with the same meaning on every command."""
    if seed:
        parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default: 0)")
    if device:
        parser.add_argument(
            "--device", type=device_name, default="cpu", help="torch device: cpu, cuda, cuda:N or mps (default: cpu)"
        )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines (default: off)")


def add_training(parser: argparse.ArgumentParser) -> None:
    """The common flags plus what every trainer takes: ``--resume``, ``--checkpoint-every``, ``--log-dir``."""
    add_common(parser)
    parser.add_argument(
        "--resume",
        metavar="PATH",
        default=None,
        help="continue from this checkpoint, written by an earlier run of the same command (default: start afresh)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="inside an epoch, save a checkpoint at most this often; one is always saved at "
        "each epoch's end (default: 300)",
    )
    parser.add_argument(
        "--log-dir",
        type=output_folder,
        default=None,
        metavar="DIR",
        help="also write TensorBoard scalars here (needs the tensorboard extra; default: off)",
    )


def add_image_training(parser: argparse.ArgumentParser, epochs: int, batch_size: int, lr: float) -> None:
    """``add_training`` plus a schedule: ``--epochs``, ``--batch-size``, ``--lr``, ``--train-examples``."""
    add_training(parser)
    parser.add_argument("--epochs", type=positive_int, default=epochs, help=f"epochs (default: {epochs})")
    parser.add_argument(
        "--batch-size", type=positive_int, default=batch_size, help=f"batch size (default: {batch_size})"
    )
    parser.add_argument("--lr", type=positive_float, default=lr, help=f"Adam learning rate (default: {lr})")
    parser.add_argument(
        "--train-examples", type=positive_int, default=None, help="use only the first N training images (default: all)"
    )
