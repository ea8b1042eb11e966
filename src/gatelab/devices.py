"""The one place that turns ``--device NAME`` into a torch device, with a clear error when it cannot be used."""

from __future__ import annotations

import torch

from gatelab.errors import GatelabError

KINDS = ("cpu", "cuda", "mps")


def resolve_device(name: str | torch.device | None = "cpu") -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` as a torch device, checked against what torch sees here."""
    if isinstance(name, torch.device):
        name = str(name)
    name = "cpu" if name is None else str(name).strip().lower()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in KINDS:
        raise GatelabError(f"unknown device {name!r}; accepted: cpu, cuda, cuda:N, mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
            raise GatelabError(f"device {name!r} is not available ({build}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GatelabError(
                f"device {name!r} does not exist; this machine has {torch.cuda.device_count()} "
                f"CUDA device(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise GatelabError(f"device {name!r} is not available here; use --device cpu")
    return device
