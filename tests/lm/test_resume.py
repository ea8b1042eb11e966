"""Checkpoints of lm.train: an interrupted run resumes exactly, and a killed `gatelab lm train` resumes and finishes."""

import importlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gatelab.checkpoint import Checkpointer, Interrupted, load_state
from gatelab.cli import main
from gatelab.lm.corpus import load_corpus
from gatelab.lm.train import LMConfig, train

lm_train = importlib.import_module("gatelab.lm.train")  # the module; gatelab.lm.train is also the function
TINY = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat is on the log"] * 30
TIMING = ("seconds", "words_per_s")  # wall-clock fields, the only ones allowed to differ


@pytest.fixture
def tiny_text(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(TINY) + "\n")
    return path


def _without_timing(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_run_interrupted_mid_epoch_resumes_exactly(tiny_text, tmp_path, monkeypatch, cell):
    corpus = load_corpus(str(tiny_text), val_size=0.1, seed=0)
    cfg = LMConfig(loss="blackout", cell=cell, samples=5, hidden=16, epochs=2, batch_size=4, bptt=8, lr=0.02, seed=3)
    whole, history = train(corpus, cfg)

    real, steps = Checkpointer.step, []

    def step_then_signal(self, snapshot):  # SIGINT after the 7th chunk of the second epoch
        steps.append(1)
        if len(steps) == per_epoch + 7:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, snapshot)

    per_epoch = -(-corpus.train.numel() // cfg.batch_size // cfg.bptt)  # chunks per epoch, about
    monkeypatch.setattr(Checkpointer, "step", step_then_signal)
    path = tmp_path / "run.pt"
    with pytest.raises(Interrupted):
        train(corpus, cfg, checkpoint=path, checkpoint_every=3600)
    monkeypatch.setattr(Checkpointer, "step", real)
    position = load_state(path)["position"]
    assert position["epoch"] == 2 and 0 < position["chunk"] < per_epoch  # saved in the middle of epoch 2

    resumed, resumed_history = train(corpus, cfg, resume=path)
    assert _without_timing(resumed_history) == _without_timing(history)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_killed_cli_run_resumes_from_its_last_checkpoint(tiny_text, tmp_path, capsys):
    out = tmp_path / "model"
    ckpt = tmp_path / "model.checkpoint.pt"
    env = {**os.environ, "PYTHONPATH": str(Path(lm_train.__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    args = ["lm", "train", str(tiny_text), "--out", str(out), "--hidden", "16", "--samples", "5"]
    args += ["--batch-size", "4", "--bptt", "8", "--threads", "1"]
    first = [sys.executable, "-m", "gatelab", *args, "--epochs", "1000", "--checkpoint-every", "0.05", "--quiet"]
    proc = subprocess.Popen(first, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # SIGKILL at any moment: perhaps while it writes the next checkpoint
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    saved = load_state(ckpt)  # the previous checkpoint is intact
    epoch, chunk = saved["position"]["epoch"], saved["position"]["chunk"]
    assert not out.exists()  # no half-filled output folder

    capsys.readouterr()
    assert main(args + ["--epochs", str(epoch + 1), "--resume", str(ckpt)]) == 0  # the same command, resumed
    err = capsys.readouterr().err
    started = re.search(r"resuming .* at epoch (\d+), chunk (\d+)", err)
    assert started and (int(started[1]), int(started[2])) == (epoch, chunk)  # no earlier than the checkpoint
    assert f"epoch {epoch + 1}/{epoch + 1}:" in err
    assert (out / "model.safetensors").is_file() and not ckpt.exists()
