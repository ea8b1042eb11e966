"""Training loops make no per-step host syncs (issue 10, section 4): statistics stay on the device and are read once
per epoch or log interval. On CPU a sync costs nothing, so the test counts the calls that would sync a GPU
(``.item()``, ``float()``, ``int()``, ``bool()``, ``.tolist()`` on a tensor) made by gatelab's own code, and checks
that doubling the steps of an epoch does not add any. Calls inside torch are not counted: the optimisers read their
step counters, which stay on the CPU unless asked otherwise. Nor are those of the compact pass of gates
(``gatelab.gates.compact``): it runs only on the CPU, since it needs the gates' values, and GPUs take the dense pass."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import gatelab
from gatelab.gates.train import TrainConfig, fit
from gatelab.lm.corpus import load_corpus
from gatelab.lm.train import LMConfig
from gatelab.lm.train import train as train_lm
from gatelab.npn.train import NPNConfig, fit_npn
from gatelab.training import fit_classifier

SYNCING = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")
CPU_ONLY = str(Path(gatelab.__file__).parent / "gates" / "compact.py")


@pytest.fixture
def count_syncs(monkeypatch):
    """A function ``run(fn, ours)`` returning how many syncing tensor calls code under the folder ``ours`` (default:
    gatelab's) made while ``fn()`` ran."""

    def run(fn, ours=Path(gatelab.__file__).parent) -> int:
        calls = []

        def counted(real):
            def call(self, *args):
                where = sys._getframe(1).f_code.co_filename
                calls.append(where.startswith(str(ours)) and where != CPU_ONLY)
                return real(self, *args)

            return call

        with monkeypatch.context() as patch:
            for name in SYNCING:
                patch.setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name)))
            fn()
        return sum(calls)

    return run


def _extra_syncs(count_syncs, run) -> int:
    """Syncs that the second run (twice the steps per epoch of the first) makes beyond the first."""
    return count_syncs(lambda: run(2)) - count_syncs(lambda: run(1))


def test_gates_fit_syncs_once_per_epoch_not_per_step(count_syncs, one_thread):
    def run(scale):  # 8 or 16 steps in one epoch
        fit(TrainConfig(model="mlp", epochs=1, train_examples=256 * scale, val_size=100, batch_size=32), quiet=True)

    assert _extra_syncs(count_syncs, run) == 0


def test_npn_fit_syncs_once_per_epoch_not_per_step(count_syncs, one_thread):
    def run(scale):  # 8 or 16 steps an epoch, through the three stages
        settings = dict(model="mlp", epochs=3, plastic_from=2, harden_from=3, batch_size=64, val_size=100)
        fit_npn(NPNConfig(**settings, train_examples=512 * scale), quiet=True)

    assert _extra_syncs(count_syncs, run) == 0


def test_lm_train_syncs_once_per_log_interval_not_per_step(count_syncs, tmp_path, one_thread):
    text = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"]

    def run(scale):  # 2x the training text: 2x the chunks of an epoch, fewer than one log interval
        path = tmp_path / f"text{scale}.txt"
        path.write_text("\n".join(text * 20 * scale) + "\n")
        corpus = load_corpus(str(path), val_size=0.1, seed=0)
        config = LMConfig(loss="blackout", samples=5, hidden=16, epochs=1, batch_size=4, bptt=8, seed=3)
        train_lm(corpus, config, compiled=False)

    assert _extra_syncs(count_syncs, run) == 0


def test_the_shared_classifier_loop_syncs_once_per_epoch_not_per_step(count_syncs, one_thread):
    """The loop that NICE's and Defense-VAE's classifiers train with."""
    config = SimpleNamespace(epochs=2, batch_size=16, lr=1e-2)

    def run(scale):  # 4 or 8 steps an epoch
        gen = torch.Generator().manual_seed(0)
        x, y = torch.randn(64 * scale, 5, generator=gen), torch.randint(0, 3, (64 * scale,), generator=gen)
        model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        fit_classifier("toy", config, model, (x, y), (x[:16], y[:16]), quiet=True)

    assert _extra_syncs(count_syncs, run) == 0


def test_the_count_sees_a_per_step_sync(count_syncs):
    """The counter can fail: a loop that reads its loss every step makes one sync a step."""

    def loop(steps):
        for _ in range(steps):
            float(torch.ones(3).sum())

    here = Path(__file__).parent
    assert count_syncs(lambda: loop(16), here) - count_syncs(lambda: loop(8), here) == 8
