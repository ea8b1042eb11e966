"""NICE's model files: every kind of damage gives the library's error, never a RuntimeError, TypeError or
SafetensorError; a bounded fuzz over mutated bytes checks the same."""

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as save_tensors

from gatelab.errors import GatelabError
from gatelab.nice import NICE, ClassifierConfig, NICEConfig, load_classifier, save_classifier, small_cnn


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    save_classifier(small_cnn(), ClassifierConfig(), folder / "clf.safetensors", 0.5)
    nice = NICE(small_cnn(), NICEConfig(epochs=1, batch_size=4)).fit(torch.rand(4, 1, 28, 28), quiet=True)
    nice.save(folder / "masks.safetensors")
    return folder / "clf.safetensors", folder / "masks.safetensors"


def load_masks(path):
    return NICE.load(path, small_cnn())


def parts(path):
    """The tensors and the gatelab metadata of a file."""
    from gatelab.weights import read_weights

    meta, tensors = read_weights(path, "test")
    return tensors, meta


def rewrite(path, tensors, meta):
    path.write_bytes(save_tensors(tensors, metadata={"gatelab": json.dumps(meta)}))
    return path


@pytest.mark.parametrize("which", [0, 1])
def test_every_kind_of_damage_is_the_library_error(files, tmp_path, which):
    source = files[which]
    load = load_classifier if which == 0 else load_masks
    key = "classifier_config" if which == 0 else "nice_config"
    tensors, meta = parts(source)
    name = sorted(tensors)[0]  # a bias of 32 values in both files
    bad = tmp_path / "bad.safetensors"
    data = source.read_bytes()
    cases = {
        "missing": (None, "does not exist"),
        "empty": (b"", "not a gatelab"),
        "random bytes": (bytes(range(256)) * 8, "not a gatelab"),
        "truncated": (data[: len(data) // 2], "may be truncated"),
        "truncated header": (data[:20], "not a gatelab"),
        "renamed tensor": (
            {**{k: v for k, v in tensors.items() if k != name}, name + "_x": tensors[name]},
            "do not fit",
        ),
        "misshapen tensor": ({**tensors, name: tensors[name][:1].clone()}, "do not fit"),
        "no metadata": (save_tensors(tensors), "not a gatelab"),
        "metadata not JSON": (save_tensors(tensors, metadata={"gatelab": "{oops"}), "not a gatelab"),
        "config a list": ({key: [1, 2]}, "not a JSON object"),
        "wrong type": ({key: {**meta[key], "epochs": "x"}}, "epochs='x' is not of type"),
        "bool for int": ({key: {**meta[key], "batch_size": True}}, "batch_size=True"),
        "NaN": ({key: {**meta[key], "lr": float("nan")}}, "lr=nan"),
        "impossible value": ({key: {**meta[key], "epochs": 0}}, "epochs must be at least 1"),
        "unknown setting": ({key: {**meta[key], "hidden": 3}}, "unknown"),
    }
    if which == 1:
        cases["bad input shape"] = ({"input_shape": [1e9, 28, 28]}, "input_shape")
        cases["huge channels"] = ({"input_shape": [4096, 28, 28]}, "input_shape")
    for case, (content, message) in cases.items():
        bad.unlink(missing_ok=True)
        if isinstance(content, bytes):
            bad.write_bytes(content)
        elif isinstance(content, dict) and all(torch.is_tensor(v) for v in content.values()):
            rewrite(bad, content, meta)
        elif isinstance(content, dict):
            rewrite(bad, tensors, {**meta, **content})
        with pytest.raises(GatelabError, match=message) as info:
            load(bad)
            pytest.fail(f"{case}: loaded")
        assert "bad.safetensors" in str(info.value), case


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_files_raise_only_the_library_error(files, tmp_path, data):
    source = files[data.draw(st.sampled_from([0, 1]))]
    raw = bytearray(source.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    for _ in range(data.draw(st.integers(1, 4))):  # mostly the header, where a byte changes the meaning
        at = data.draw(st.integers(0, header + 16))
        raw[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(raw))
    try:
        (load_classifier if source.name == "clf.safetensors" else load_masks)(path)
    except GatelabError:
        pass
