"""Fixtures shared by the NPN tests."""

import os
import signal

import pytest

import gatelab.npn.plasticity as plasticity


@pytest.fixture
def count_steps():
    """``count_steps(monkeypatch, signal_at=None)``: count NPN's train steps; the ``signal_at``-th sends this
    process SIGTERM, as a scheduler stopping the job would. Returns the list that grows by one a step."""

    def install(monkeypatch, signal_at=None):
        calls, real = [], plasticity.train_step

        def step(*args, **kw):
            out = real(*args, **kw)
            calls.append(1)
            if len(calls) == signal_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return out

        monkeypatch.setattr(plasticity, "train_step", step)
        return calls

    return install
