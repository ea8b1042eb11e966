"""Gates tests read each MNIST split once per session: fit's reader is the real one behind a cache."""

import functools

import pytest

from gatelab.data import mnist_tensors


@functools.cache
def _cached(name, split, root=None):
    return mnist_tensors(name, split, root)


@pytest.fixture(autouse=True)
def _mnist_once(monkeypatch):
    monkeypatch.setattr("gatelab.gates.train.mnist_tensors", _cached)
    monkeypatch.setattr("gatelab.data.splits.mnist_tensors", _cached)
