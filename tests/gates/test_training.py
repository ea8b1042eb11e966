"""Short training runs on real MNIST: an accuracy floor while pruning, the CLI, checkpoints, reproductions."""

import json
import subprocess
import sys

import torch

from gatelab.gates import export, summary
from gatelab.gates.train import TrainConfig, fit, load_checkpoint


def test_quick_arm_run_learns_while_pruning():
    """938 ARM steps (2 epochs) of the paper's MLP: at least 90% test accuracy with at least 25% of weights pruned."""
    model, history = fit(TrainConfig(model="mlp", estimator="arm", epochs=2), progress=False)
    s = summary(model)
    assert history.test_error[-1] < 10.0, history.test_error
    assert s.params_kept <= 0.75 * s.params_dense, str(s)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "gatelab", *args], capture_output=True, text=True, check=True)


def test_cli_train_summary_export_round_trip(tmp_path):
    ckpt = tmp_path / "mlp.safetensors"
    _cli(
        "gates",
        "train",
        "--model",
        "mlp",
        "--dataset",
        "fashion-mnist",
        "--epochs",
        "1",
        "--train-examples",
        "2000",
        "--out",
        str(ckpt),
        "--quiet",
    )
    meta = json.loads((tmp_path / "mlp.safetensors.json").read_text())
    assert meta["config"]["dataset"] == "fashion-mnist" and len(meta["history"]["test_error"]) == 1
    out = _cli("gates", "summary", str(ckpt)).stdout
    assert "architecture" in out and "fc1" in out
    model, config = load_checkpoint(ckpt)
    assert summary(model).architecture in out
    scripted = tmp_path / "small.pt"
    _cli("gates", "export", str(ckpt), "--out", str(scripted))
    loaded = torch.jit.load(str(scripted))
    x = torch.rand(7, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(export(model)(x), model(x), rtol=1e-4, atol=1e-5)


def test_cli_help_and_version():
    assert "gates" in _cli("--help").stdout
    assert _cli("--version").stdout.startswith("gatelab ")
    assert "--estimator" in _cli("gates", "train", "--help").stdout
