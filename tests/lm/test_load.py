"""The lm folder loader: every defect of config.json, vocab.json or model.safetensors is a GatelabError."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from gatelab.errors import GatelabError
from gatelab.lm.train import LMConfig, build_model, load_model, save_model
from gatelab.lm.vocab import Vocab

SENTENCES = [s.split() for s in ["the cat sat", "a dog sat on the mat", "the mat"] * 5]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm") / "m"
    vocab = Vocab.build(SENTENCES)
    cfg = LMConfig(loss="blackout", samples=3, hidden=6, epochs=1)
    save_model(build_model(vocab, cfg), vocab, cfg, folder)
    return folder


def _copy(saved, tmp_path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(saved, folder)
    return folder


def _edit_config(folder, **changes):
    meta = json.loads((folder / "config.json").read_text())
    meta["config"].update(changes)
    (folder / "config.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"hidden": "x"}, "setting hidden='x' is not of type"),
        ({"hidden": True}, "setting hidden=True is not of type"),
        ({"hidden": 10**9}, "do not belong together"),
        ({"alpha": 7.0}, "alpha must be in"),
        ({"lr": -1}, "lr must be"),
        ({"cell": "gru"}, "unknown cell"),
        ({"seed": -3}, "seed must be"),
        ({"hiden": 6}, r"unknown language-model settings \['hiden'\]"),
        ({"embed": 4}, "do not belong together"),
    ],
)
def test_bad_config_is_the_library_error(saved, tmp_path, changes, message):
    folder = _copy(saved, tmp_path)
    _edit_config(folder, **changes)
    with pytest.raises(GatelabError, match=message):
        load_model(folder)


def test_renamed_missing_or_truncated_tensors_are_the_library_error(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["recurrent_weight"] = tensors.pop("recurrent")
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(GatelabError, match="do not fit"):
        load_model(folder)
    tensors.pop("output.weight")
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(GatelabError, match="'output.weight' is missing"):
        load_model(folder)
    data = (saved / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(GatelabError, match="not a readable safetensors file"):
        load_model(folder)
    (folder / "config.json").write_text('{"config": [1, 2]}')
    with pytest.raises(GatelabError, match="config.json is (malformed|not a gatelab language-model file)"):
        load_model(folder)


@settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from(["model.safetensors", "config.json"]),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_mutated_files_only_ever_raise_the_library_error(saved, which, edits, cut):
    """Bytes overwritten at random places, or the file cut short: loading succeeds or raises GatelabError."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(saved, Path(tmp) / "m"))
        data = bytearray((folder / which).read_bytes())
        for where, byte in edits:
            data[int(where * len(data))] = byte
        if cut is not None:
            data = data[: int(cut * len(data))]
        (folder / which).write_bytes(bytes(data))
        try:
            load_model(folder)
        except GatelabError:
            pass
