"""make_pairs / load_pairs: counts and shapes on disk, resuming only the lost shard, refusals, feeding DefenseVAE."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from gatelab.defense import DefenseVAE, VAEConfig, load_pair_labels, load_pairs, make_pairs
from gatelab.defense import pairs as pairs_module
from gatelab.defense.pairs import subset_rows
from gatelab.errors import GatelabError

pytest.importorskip("torchattacks")

ATTACKS, EPS = ("fgsm", "rand_fgsm", "cw"), (0.2, 0.3)


@pytest.fixture
def data():
    """20 random images with labels, and an untrained softmax classifier (the pairs do not need a good one)."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(20, 1, 28, 28, generator=gen) * 255).round() / 255
    y = torch.randint(0, 10, (20,), generator=gen)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), x, y


@pytest.fixture
def counted(monkeypatch):
    """Every batch attacked: (attack, eps, batch size)."""
    calls, original = [], pairs_module.attack

    def counting(model, x, y, name, eps, **kw):
        calls.append((name, eps, len(x)))
        return original(model, x, y, name, eps, **kw)

    monkeypatch.setattr(pairs_module, "attack", counting)
    return calls


def test_pairs_on_disk_resume_and_fit(data, counted, tmp_path, one_thread):
    model, x, y = data
    folder = make_pairs(model, x, y, tmp_path / "p", ATTACKS, EPS, batch_size=8, shard_size=10, quiet=True)
    index = json.loads((folder / "index.json").read_text())
    assert len(index["shards"]) == 3 * 2 * 2 and len(counted) == 3 * 2 * 2 * 2  # 10 images: batches of 8 and 2
    clean = np.load(folder / "clean.npy")
    assert clean.dtype == np.uint8 and np.array_equal(clean, (x * 255).round().to(torch.uint8).numpy())
    fgsm = np.load(folder / "adv-fgsm-0.3-00001.npy").astype(np.float64) / 255
    assert fgsm.shape == (10, 1, 28, 28)
    assert np.abs(fgsm - x[10:].numpy()).max() <= 0.3 + 0.5 / 255 + 1e-6  # the eps ball, widened by rounding

    adv, pure = load_pairs(folder)
    assert isinstance(adv, np.memmap) and isinstance(pure, np.memmap)
    assert adv.shape == pure.shape == (120, 1, 28, 28) and adv.dtype == pure.dtype == np.uint8
    k = next(i for i, s in enumerate(index["shards"]) if s["file"] == "adv-fgsm-0.3-00001.npy")
    assert np.array_equal(pure[10 * k : 10 * k + 10], clean[10:20])
    assert np.array_equal(adv[10 * k : 10 * k + 10], np.load(folder / "adv-fgsm-0.3-00001.npy"))
    labels = load_pair_labels(folder)  # one per pair, aligned with the rows of load_pairs
    assert labels.dtype == np.int64 and np.array_equal(labels, np.tile(y.numpy(), 6))
    sub_adv, sub_pure, sub_labels, rows = subset_rows((adv, pure, labels, np.arange(120)), 7, seed=1)
    assert len(set(rows)) == 7 and list(rows) == sorted(rows)  # in order, no repeats
    assert np.array_equal(sub_adv, adv[rows]) and np.array_equal(sub_pure, pure[rows])
    assert np.array_equal(sub_labels, labels[rows])
    assert subset_rows((adv, pure), None, seed=1)[0] is adv

    lost = folder / "adv-rand_fgsm-0.2-00000.npy"
    before = lost.read_bytes()
    lost.unlink()
    with pytest.raises(GatelabError, match="lacks 1 of 12 shards"):
        load_pairs(folder)
    counted.clear()
    make_pairs(model, x, y, folder, ATTACKS, EPS, batch_size=8, shard_size=10, quiet=True)
    assert counted == [("rand_fgsm", 0.2, 8), ("rand_fgsm", 0.2, 2)]  # only the lost shard
    assert lost.read_bytes() == before  # the same seeds: the same images
    assert not (folder / "pairs-adversarial.npy").exists()  # the joined files are rebuilt from the new shard

    fitted = DefenseVAE(VAEConfig(latent=4, batch_size=16, epochs=1)).fit(*load_pairs(folder), quiet=True)
    assert len(fitted.history_) == 1 and np.isfinite(fitted.history_[0]["loss"])


def test_other_settings_or_images_are_refused(data, tmp_path):
    model, x, y = data
    folder = make_pairs(model, x[:4], y[:4], tmp_path / "p", ("fgsm",), (0.3,), quiet=True)
    with pytest.raises(GatelabError, match=r"\(eps, shards differ\)"):
        make_pairs(model, x[:4], y[:4], folder, ("fgsm",), (0.2,), quiet=True)
    with pytest.raises(GatelabError, match="other images"):
        make_pairs(model, x[4:8], y[4:8], folder, ("fgsm",), (0.3,), quiet=True)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"attacks": ("fgsm", "nope")}, "nope"),
        ({"attacks": ()}, "at least one"),
        ({"eps": (0.3, 1.5)}, r"\[0, 1\]"),
        ({"eps": (0.3, 0.3)}, "repeat"),
        ({"batch_size": 0}, "batch_size"),
        ({"shard_size": -1}, "shard_size"),
    ],
)
def test_bad_settings_are_refused(data, tmp_path, kw, match):
    model, x, y = data
    with pytest.raises(GatelabError, match=match):
        make_pairs(model, x, y, tmp_path / "p", **{"attacks": ("fgsm",), "eps": (0.3,), "quiet": True, **kw})
    assert not (tmp_path / "p").exists()


def test_bad_folders_are_refused(data, tmp_path):
    with pytest.raises(GatelabError, match="no index.json"):
        load_pairs(tmp_path)
    (tmp_path / "index.json").write_text("{")
    with pytest.raises(GatelabError, match="damaged"):
        load_pairs(tmp_path)
    model, x, y = data
    folder = make_pairs(model, x[:4], y[:4], tmp_path / "p", ("fgsm",), (0.3,), quiet=True)
    (folder / "adv-fgsm-0.3-00000.npy").write_bytes(b"not numpy")
    with pytest.raises(GatelabError, match="cannot be read"):
        load_pairs(folder)


def test_damaged_joined_pairs_are_refused(data, tmp_path):
    """The joined files an earlier load_pairs wrote, cut short or swapped for another array, are named."""
    model, x, y = data
    folder = make_pairs(model, x[:4], y[:4], tmp_path / "p", ("fgsm",), (0.3,), quiet=True)
    load_pairs(folder)
    joined = folder / "pairs-adversarial.npy"
    joined.write_bytes(joined.read_bytes()[:1000])
    with pytest.raises(GatelabError, match="pairs-adversarial.npy cannot be read"):
        load_pairs(folder)
    np.save(joined, np.zeros((3, 1, 28, 28), np.uint8))
    with pytest.raises(GatelabError, match=r"not uint8 \(4, 1, 28, 28\)"):
        load_pairs(folder)
