"""Bad input gets a clear error that says what is accepted; a failing disk gets one line, not a crash."""

import errno
import json
import pathlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn

from gatelab.cli import main
from gatelab.errors import GatelabError
from gatelab.gates import per_layer, sparsify, train_step
from gatelab.gates.train import TrainConfig, build_gated, load_checkpoint, save_checkpoint


def test_model_without_gateable_layer():
    with pytest.raises(GatelabError, match="no layer that can be gated"):
        sparsify(nn.Sequential(nn.ReLU(), nn.Tanh()))


def test_unknown_estimator_and_granularity():
    with pytest.raises(GatelabError, match="accepted: .*arm"):
        sparsify(nn.Linear(3, 2), estimator="reinforce")
    with pytest.raises(GatelabError, match="accepted: weight, neuron, channel, structured"):
        sparsify(nn.Linear(3, 2), granularity="filter")


def test_impossible_hyperparameters():
    with pytest.raises(GatelabError, match="lam .* accepted: a finite number >= 0"):
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


def test_per_layer_spreads_numbers_lists_and_mappings():
    names = ["fc1", "fc2"]
    assert per_layer("lam", 0.5, names) == {"fc1": 0.5, "fc2": 0.5}
    assert per_layer("lam", [1, 2], names) == {"fc1": 1.0, "fc2": 2.0}
    assert per_layer("lam", {"fc2": 2, "fc1": 1, "conv": 9}, names, known=["conv"]) == {"fc1": 1.0, "fc2": 2.0}
    for bad, message in [(float("nan"), "accepted"), ("0.1", "accepted"), ({"fc9": 1}, "unknown layers")]:
        with pytest.raises(GatelabError, match=message):
            per_layer("lam", bad, names)


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


def _run(capsys, *args):
    """``gatelab ARGS`` in this process: the exit status and stderr."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--lam", "-1"], "accepted: a finite number >= 0"),
        (["--lam", "nan"], "expected a finite number"),
        (["--keep-prob", "0.5,2,0.5"], "accepted: a probability in (0, 1)"),
        (["--estimator", "nope"], "invalid choice"),
        (["--train-examples", "0"], "expected an integer in [1, 2**31 - 1]"),
        (["--val-size", "-5"], "expected an integer in [1, 2**31 - 1]"),
        (["--epochs", "0"], "expected an integer in [1, 2**31 - 1]"),
        (["--lr", "nan"], "expected a finite number > 0"),
        (["--k", "-1"], "expected a finite number >= 0"),
        (["--device", "tpu"], "unknown device"),
        (["--checkpoint-every", "0"], "expected a finite number > 0"),
        (["--train-examples", "60000"], "train_examples 60000 is outside [1, 55000]"),
    ],
)
def test_cli_train_refuses_bad_numbers_with_one_line(capsys, tmp_path, args, message):
    code, err = _run(capsys, "gates", "train", "--model", "mlp", "--out", str(tmp_path / "m.safetensors"), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_cli_checks_out_before_training(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("gatelab.gates.train.fit", lambda *a, **k: pytest.fail("trained before checking --out"))
    code, err = _run(capsys, "gates", "train", "--out", str(tmp_path))
    assert code == 2 and "is an existing folder" in err
    (tmp_path / "file").write_text("")
    code, err = _run(capsys, "gates", "train", "--out", str(tmp_path / "file" / "m.safetensors"))
    assert code == 2 and "is a file, not a folder" in err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real gates checkpoint (an untrained gated MLP) and its config."""
    config = TrainConfig(model="mlp")
    path = tmp_path_factory.mktemp("ckpt") / "mlp.safetensors"
    save_checkpoint(build_gated(config), config, path)
    return path


def test_export_on_a_failing_disk_is_one_line_and_leaves_nothing(capsys, tmp_path, monkeypatch, checkpoint):
    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    code, err = _run(capsys, "gates", "export", str(checkpoint), "--out", str(tmp_path / "small.pt"))
    assert code == 2 and "No space left on device" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no half-written file, no temporary left


def _rewrite(source, target, rename=None, config=None):
    tensors = load_file(str(source))
    if rename:
        tensors[rename[1]] = tensors.pop(rename[0])
    meta = {"train_config": {**json.loads(_metadata(source))["train_config"], **(config or {})}}
    save_file(tensors, str(target), metadata={"gatelab": json.dumps(meta)})


def _metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata()["gatelab"]


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(rename=("fc1.parametrizations.weight.original", "fc1.weight")), "does not hold the weights"),
        (dict(config={"epochs": "x"}), "setting epochs='x' is not of type"),
        (dict(config={"lam": [0.1, "a"]}), r"setting lam=\[0.1, 'a'\] is not of type"),
        (dict(config={"model": "lenet5"}), "does not hold the weights of a gated lenet5"),
        (dict(config={"hidden": 3}), r"unknown gates training settings \['hidden'\]"),
        (dict(config={"lam": [0.1, 0.1]}), "2 values for 3 gated layers"),
    ],
)
def test_edited_checkpoints_give_the_library_error(tmp_path, checkpoint, change, message):
    bad = tmp_path / "bad.safetensors"
    _rewrite(checkpoint, bad, **change)
    with pytest.raises(GatelabError, match=message):
        load_checkpoint(bad)


@pytest.mark.parametrize("keep", [0, 7, 100, 0.5])
def test_truncated_checkpoints_give_the_library_error(tmp_path, checkpoint, keep):
    data = checkpoint.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    with pytest.raises(GatelabError, match="bad.safetensors"):
        load_checkpoint(bad)


@settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_checkpoints_raise_only_the_library_error(tmp_path, checkpoint, data):
    original = checkpoint.read_bytes()
    header = 8 + int.from_bytes(original[:8], "little")
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        where = data.draw(st.integers(0, header + 64), label="where")  # mostly the header and config
        raw[where] = data.draw(st.integers(0, 255), label="byte")
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw)), label="length")]
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(bytes(raw))
    try:
        load_checkpoint(path)
    except GatelabError:
        pass
