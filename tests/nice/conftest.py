"""Fixtures shared by the NICE tests: a record of which MNIST splits are read."""

import pytest


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
