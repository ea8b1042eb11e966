"""Fixtures shared by the NICE tests: one torch thread, and a record of which MNIST splits are read."""

import pytest
import torch


@pytest.fixture
def one_thread():
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
