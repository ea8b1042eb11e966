"""Shared test settings: the real data folder, deterministic seeds, one torch thread where exactness needs it,
and a record of which MNIST splits are read."""

import os
import signal
from pathlib import Path

import pytest
import torch

_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "GATELAB_DATA" not in os.environ and _SHARED.is_dir():
    os.environ["GATELAB_DATA"] = str(_SHARED)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_reaches_python():
    """Tests press Ctrl-C by sending SIGINT; a shell that starts the suite in the background (`nohup ... &`)
    leaves SIGINT ignored, which gatelab rightly respects, so give the test process Python's own handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def one_thread():
    """One torch thread, so that runs compared bit for bit (say, resumed against uninterrupted) are deterministic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def split_reads(monkeypatch):
    """Every MNIST split read from disk, in order ("train", "test"); tests add their own events to it."""
    import gatelab.data.mnist as mnist

    reads, original = [], mnist.load_mnist

    def recording(name, split="train", root=None):
        reads.append(split)
        return original(name, split, root)

    monkeypatch.setattr(mnist, "load_mnist", recording)
    return reads
