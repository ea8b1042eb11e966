"""``gatelab npn train``: killed and resumed, outputs, and bad input refused before any training."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from gatelab.checkpoint import load_state
from gatelab.cli import main

EPOCHS = 6
TRAIN = ["npn", "train", "--model", "mlp", "--init-active", "0.5", "--epochs", str(EPOCHS), "--plastic-from", "2"]
TRAIN += ["--harden-from", str(EPOCHS), "--train-examples", "300", "--val-size", "100", "--batch-size", "30"]


def test_killed_mid_run_then_resumed_finishes_from_its_checkpoint(tmp_path):
    out, ckpt = tmp_path / "run", tmp_path / "run.checkpoint.pt"
    command = [sys.executable, "-m", "gatelab", *TRAIN, "--out", str(out), "--checkpoint-every", "0.2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command + ["--quiet"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (ckpt.is_file() and load_state(ckpt)["epoch"] >= 2) and first.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
    assert first.returncode == -signal.SIGKILL, first.stderr.read()
    saved = load_state(ckpt)  # the checkpoint survives the kill intact
    position = (saved["epoch"], saved["step"])
    assert (2, 0) <= position <= (EPOCHS, 10) and not out.exists()

    resumed = subprocess.run(command + ["--resume", str(ckpt)], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {ckpt} at epoch {position[0]}, step {position[1]}" in resumed.stderr
    epochs = [int(e) for e in re.findall(rf"^epoch +(\d+)/{EPOCHS}", resumed.stderr, re.M)]
    assert epochs == list(range(position[0], EPOCHS + 1))  # no epoch before the checkpoint is trained again
    log = json.loads((out / "log.json").read_text())
    assert log["epoch"] == list(range(1, EPOCHS + 1)) and log["stage"][-1] == "hardening"
    assert 0 <= log["test_error"] < 100 and len(log["val_error"]) == EPOCHS
    assert json.loads((out / "config.json").read_text())["val_size"] == 100
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "log.json",
        "gated.safetensors",
        "exported.pt",
        "checkpoint.pt",
        "active_units.png",
        "transition_rate.png",
    }
    assert not ckpt.exists() and load_state(out / "checkpoint.pt")["epoch"] == EPOCHS + 1
    assert "test error" in resumed.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--init-active", "1.5"], "--init-active: expected a fraction in (0, 1]"),
        (["--epochs", "0"], "--epochs: expected an integer in [1, 2**31 - 1]"),
        (["--lr", "nan"], "--lr: expected a finite number > 0"),
        (["--lam", "0.1,nan"], "--lam: expected a finite number"),
        (["--train-examples", "-1"], "--train-examples: expected an integer in [1, 2**31 - 1]"),
        (["--val-size", "0"], "--val-size: expected an integer in [1, 2**31 - 1]"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--model", "vgg"], "invalid choice: 'vgg'"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(capsys, flags, message):
    with pytest.raises(SystemExit) as info:
        main([*TRAIN, *flags])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_bad_values_and_outputs_are_refused_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for flags, message in (
        (["--out", str(tmp_path / "file")], "is an existing file; name a folder"),
        (["--out", str(tmp_path / "file" / "run")], "is a file, not a folder"),
        (["--lam", "-1", "--out", str(tmp_path / "a")], "lam for 'fc1' is -1.0; accepted: a finite number >= 0"),
        (["--lam", "1,2", "--out", str(tmp_path / "a")], "lam has 2 values for 3 gated layers"),
        (["--harden-from", "9", "--out", str(tmp_path / "a")], "never hardens within 6 epochs"),
    ):
        assert main([*TRAIN, *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written
