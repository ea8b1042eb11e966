"""Bad input gets a clear error that says what is accepted."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from gatelab.errors import GatelabError
from gatelab.gates import sparsify, train_step


def test_model_without_gateable_layer():
    with pytest.raises(GatelabError, match="no layer that can be gated"):
        sparsify(nn.Sequential(nn.ReLU(), nn.Tanh()))


def test_unknown_estimator_and_granularity():
    with pytest.raises(GatelabError, match="accepted: .*arm"):
        sparsify(nn.Linear(3, 2), estimator="reinforce")
    with pytest.raises(GatelabError, match="accepted: weight, neuron, channel, structured"):
        sparsify(nn.Linear(3, 2), granularity="filter")


def test_impossible_hyperparameters():
    with pytest.raises(GatelabError, match="lam .* accepted: a number >= 0"):
        sparsify(nn.Linear(3, 2), lam=-0.1)
    with pytest.raises(GatelabError, match="keep_prob"):
        sparsify(nn.Linear(3, 2), keep_prob=1.0)
    with pytest.raises(GatelabError, match="finite number >= 0"):
        sparsify(nn.Linear(3, 2), k=-1)
    with pytest.raises(GatelabError, match="3 gated layers"):
        sparsify(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 2)), lam=[0.1, 0.1])
    model = sparsify(nn.Linear(3, 2))
    with pytest.raises(GatelabError, match="dataset_size"):
        train_step(
            model,
            torch.zeros(2, 3),
            torch.zeros(2, dtype=torch.long),
            torch.optim.SGD(model.parameters(), 0.1),
            dataset_size=0,
        )
    with pytest.raises(GatelabError, match="already has gates"):
        sparsify(model)


def test_naming_a_residual_layer_explains_why_it_cannot_be_gated():
    from gatelab.gates import SmallResNet

    with pytest.raises(GatelabError, match="residual"):
        sparsify(SmallResNet(), "channel", layers=["stage1.conv2"])


def test_missing_data_file_says_where_to_put_it(tmp_path, monkeypatch):
    from gatelab.data import load_mnist
    from gatelab.errors import DataMissingError

    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(DataMissingError, match="put mnist/train-images-idx3-ubyte.gz under"):
        load_mnist("mnist", "train", root=tmp_path)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "gatelab", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args,message",
    [
        (["gates", "train", "--lam", "-1"], "lam must be >= 0"),
        (["gates", "train", "--estimator", "nope"], "invalid choice"),
        (["gates", "summary", "/no/such/file"], "does not exist"),
        (["reproduce", "no-such-run"], "unknown reproduction"),
    ],
)
def test_cli_prints_one_line_and_exits_2(args, message):
    result = _cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a checkpoint")
    result = _cli("gates", "summary", str(bad))
    assert result.returncode == 2 and "not a gatelab gates checkpoint" in result.stderr
