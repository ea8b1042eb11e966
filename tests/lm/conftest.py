import os
from pathlib import Path

import pytest
import torch

DATA = Path(os.environ.get("GATELAB_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """The machine is shared and loaded: intra-op threads only fight over it. Results do not depend on this."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("GATELAB_DATA", str(DATA))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ptb_available():
    if not (DATA / "ptb" / "ptb.train.txt").is_file():
        pytest.skip(f"PTB not found under {DATA}")
    return DATA
