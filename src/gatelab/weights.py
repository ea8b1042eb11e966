"""Model files: safetensors weights with gatelab's JSON metadata, read with every failure made clear.

One writer and one reader for every subpackage's weight files, and one
type-checked way to rebuild a config dataclass from saved metadata. The
reader turns anything a damaged or foreign file can raise (a truncated file,
a bad header, a renamed tensor, a config field of the wrong type) into a
GatelabError that names the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from gatelab.errors import GatelabError
from gatelab.files import write_bytes

T = TypeVar("T")


def save_weights(model: nn.Module, path: str | os.PathLike, meta: dict) -> Path:
    """``model``'s weights as safetensors with ``meta`` as JSON under the ``gatelab`` metadata key, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return write_bytes(path, save_tensors(tensors, metadata={"gatelab": json.dumps(meta)}))


def read_weights(path: str | os.PathLike, what: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The metadata dict and the tensors of a file from ``save_weights``; a GatelabError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise GatelabError(f"{what} file {path} does not exist")
    data = path.read_bytes()
    try:
        tensors = load_tensors(data)
        size = int.from_bytes(data[:8], "little")  # the header's length, then the JSON header itself
        meta = json.loads(json.loads(bytes(data[8 : 8 + size]))["__metadata__"]["gatelab"])
        if not isinstance(meta, dict):
            raise TypeError("the gatelab metadata is not a JSON object")
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as exc:  # safetensors raises its own errors, and Rust panics are BaseExceptions
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise GatelabError(
            f"{path} is not a gatelab {what} file ({type(exc).__name__}: {reason}); it may be truncated or "
            "damaged: write it again"
        ) from None
    return meta, tensors


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], path, what: str) -> nn.Module:
    """Copy ``tensors`` into ``model``; missing, renamed or misshapen tensors are a GatelabError."""
    try:
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise GatelabError(f"{path} holds tensors that do not fit a {what} ({reason})") from None
    return model


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if origin in (list, tuple):  # JSON has lists only; every element must fit
        return isinstance(value, list) and all(_fits(v, typing.get_args(hint)[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def config_from(cls: type[T], data: Any, path, what: str) -> T:
    """Rebuild dataclass ``cls`` from a file's metadata, checking every field's type, then ``validate()`` it.

    Missing fields take their defaults; unknown fields and values of the wrong
    type (``"hidden": "x"``) are refused with the field's name.
    """
    if not isinstance(data, dict):
        raise GatelabError(f"{path} is not a gatelab {what} file (its config is not a JSON object)")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise GatelabError(f"{path} has unknown {what} settings {unknown}; accepted: {', '.join(sorted(names))}")
    for name, value in data.items():
        if not _fits(value, hints[name]):
            raise GatelabError(f"{path}: setting {name}={value!r} is not of type {hints[name]}")
    config = cls(**{k: float(v) if hints[k] is float else v for k, v in data.items()})
    try:
        return config.validate()
    except GatelabError as exc:
        raise GatelabError(f"{path} holds an impossible {what} setting: {exc}") from None
