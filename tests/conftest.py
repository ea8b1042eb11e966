"""Shared test settings: the real data folder, deterministic seeds, and one torch thread where exactness needs it."""

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


@pytest.fixture
def one_thread():
    """One torch thread, so that runs compared bit for bit (say, resumed against uninterrupted) are deterministic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
