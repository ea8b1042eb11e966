"""Shared test settings: the real data folder, and deterministic seeds."""

import os
from pathlib import Path

import pytest
import torch

_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "GATELAB_DATA" not in os.environ and _SHARED.is_dir():
    os.environ["GATELAB_DATA"] = str(_SHARED)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
