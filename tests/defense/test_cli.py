"""The `gatelab defense` commands end to end on tiny real-MNIST settings, and their one-line refusals of bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gatelab.cli import main
from gatelab.data import image_splits, mnist_tensors
from gatelab.defense import (
    VAE18,
    ClassifierConfig,
    DefenseVAE,
    VAEConfig,
    classifier,
    load_classifier,
    load_pairs,
    save_classifier,
)
from gatelab.nice.images import write_png


def run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse rejects a malformed option while parsing
        return exc.code


def test_round_trip(tmp_path, capsys, split_reads, one_thread):
    clf, vae, pairs = tmp_path / "c.safetensors", tmp_path / "v.safetensors", tmp_path / "pairs"
    small = ["--quiet", "--seed", "1"]
    argv = ["defense", "train-classifier", "--model", "D", "--epochs", "1", "--train-examples", "2000"]
    assert run([*argv, "--val-size", "30000", "--out", str(clf), *small]) == 0  # half: the pairs must avoid it
    assert split_reads[-1] == "test" and split_reads.count("test") == 1  # the test split only for the final number
    out = capsys.readouterr().out
    assert "validation accuracy" in out and "test accuracy" in out
    assert clf.exists() and (tmp_path / "c.safetensors.checkpoint.pt").exists()
    model, config = load_classifier(clf)
    assert (config.model, config.epochs, config.train_examples, config.seed) == ("D", 1, 2000, 1)

    argv = ["defense", "train", "--classifier", str(clf), "--attacks", "fgsm", "rand_fgsm", "--eps", "0.3"]
    argv += ["--train-examples", "64", "--epochs", "1", "--latent", "8", "--pairs", str(pairs), "--out", str(vae)]
    assert run([*argv, *small]) == 0
    assert "on 128 pairs" in capsys.readouterr().out  # 2 attacks x 1 eps x 64 images
    purifier = DefenseVAE.load(vae)
    assert purifier.config == VAEConfig(latent=8, epochs=1)  # the paper's r, lr and batch size by default
    index = json.loads((pairs / "index.json").read_text())
    assert (index["images"], index["attacks"], index["eps"]) == (64, ["fgsm", "rand_fgsm"], [0.3])
    first, _, _, _ = image_splits("mnist", 30000, seed=1, train_examples=64)  # outside its validation split
    assert np.array_equal(load_pairs(pairs)[1][:64], (255 * first).round().to(torch.uint8).numpy())
    assert (tmp_path / "v.safetensors.checkpoint.pt").exists()

    models = ["--classifier", str(clf), "--vae", str(vae)]
    argv = ["defense", "evaluate", *models, "--count", "12", "--attacks", "fgsm", "--eps", "0.2", "0.3"]
    assert run([*argv, "--adaptive", "--out", str(tmp_path / "ev"), *small]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    table = results["accuracy"]
    rows = ["clean", "fgsm eps=0.2", "adaptive_pgd eps=0.2", "fgsm eps=0.3", "adaptive_pgd eps=0.3"]
    assert sorted(table) == sorted(rows) and (results["count"], results["dataset"]) == (12, "mnist")
    assert set(table["clean"]) == {"undefended", "defense_vae"} and set(table["adaptive_pgd eps=0.3"]) == {
        "undefended",
        "defense_vae",
    }
    assert all(0 <= a <= 1 and round(12 * a, 6).is_integer() for r in table.values() for a in r.values())
    assert all(row in printed for row in rows) and (tmp_path / "ev" / "accuracy.png").stat().st_size > 0

    argv = ["defense", "purify", *models, "--attack", "fgsm", "mnist", "--count", "3"]
    assert run([*argv, "--out", str(tmp_path / "pu"), *small]) == 0
    assert sorted(p.name for p in (tmp_path / "pu" / "purified").iterdir()) == [f"mnist-{i:05d}.png" for i in range(3)]
    assert Image.open(tmp_path / "pu" / "panel.png").size[1] > 0
    x, _ = mnist_tensors("mnist", "test")
    image = write_png(tmp_path / "seven.png", x[0])
    assert run(["defense", "purify", *models, str(image), "--out", str(tmp_path / "pf"), *small]) == 0
    with Image.open(tmp_path / "pf" / "purified" / "seven.png") as im:
        assert im.size == (28, 28)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folders left


def test_modes_2_and_3_pgd_training_and_the_black_box_column(tmp_path, capsys, one_thread):
    clf, vae, pairs = tmp_path / "c.safetensors", tmp_path / "v.safetensors", tmp_path / "pairs"
    small = ["--quiet", "--epochs", "1", "--train-examples", "100", "--val-size", "50"]
    assert run(["defense", "train-classifier", "--model", "D", "--out", str(clf), *small]) == 0
    argv = ["defense", "train", "--classifier", str(clf), "--attacks", "fgsm", "--eps", "0.3", "--latent", "4"]
    assert (
        run([*argv, "--train-examples", "32", "--epochs", "1", "--pairs", str(pairs), "--out", str(vae), "--quiet"])
        == 0
    )
    mode2 = tmp_path / "m2.safetensors"
    assert run(["defense", "train-classifier", "--model", "D", "--vae", str(vae), "--out", str(mode2), *small]) == 0
    assert "on reconstructions" in capsys.readouterr().out
    m3c, m3v = tmp_path / "m3c.safetensors", tmp_path / "m3v.safetensors"
    argv = ["defense", "fine-tune", "--classifier", str(clf), "--vae", str(vae), "--pairs", str(pairs), "--epochs", "1"]
    assert run([*argv, "--out", str(m3v), "--out-classifier", str(m3c), "--quiet"]) == 0
    assert "mode 3 on 32 pairs" in capsys.readouterr().out
    pgd = tmp_path / "pgd.safetensors"
    argv = ["defense", "train-classifier", "--model", "D", "--adversarial", "--pgd-steps", "2", "--pgd-alpha", "0.1"]
    assert run([*argv, "--init", str(clf), "--out", str(pgd), *small]) == 0
    assert "PGD adversarial training" in capsys.readouterr().out
    argv = ["defense", "evaluate", "--classifier", str(clf), "--vae", str(vae), "--count", "6", "--attacks", "fgsm"]
    argv += ["--mode2", str(mode2), "--mode3", str(m3c), str(m3v), "--pgd-trained", str(pgd), "--black-box"]
    assert run([*argv, "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    table = json.loads((tmp_path / "ev" / "results.json").read_text())["accuracy"]
    assert set(table) == {"clean", "fgsm eps=0.3", "black_box_fgsm eps=0.3"}
    assert set(table["clean"]) == {"undefended", "defense_vae", "mode_2", "mode_3", "pgd_trained"}
    assert "mode-3" in printed and "black_box_fgsm eps=0.3" in printed


@pytest.fixture
def files(tmp_path, monkeypatch):
    """An (untrained) classifier and purifier, and traps that fail the test if any work starts."""

    def never(*args, **kw):
        raise AssertionError("work started before the input was checked")

    for name in ("train_classifier", "make_pairs", "evaluate", "fine_tune", "adversarial_training"):
        monkeypatch.setattr(f"gatelab.defense.{name}", never)
    monkeypatch.setattr("gatelab.defense.DefenseVAE.fit", never)
    clf = tmp_path / "c.safetensors"
    save_classifier(classifier("D"), ClassifierConfig(model="D"), clf)
    vae = tmp_path / "v.safetensors"
    untrained = DefenseVAE(VAEConfig(latent=4))
    untrained.vae_ = VAE18(4).eval()
    untrained.save(vae)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    a_file = tmp_path / "file"
    a_file.write_text("")
    return {"clf": str(clf), "vae": str(vae), "corrupt": str(corrupt), "file": str(a_file), "dir": tmp_path}


BAD = {
    "unknown attack": (["train", "--classifier", "{clf}", "--attacks", "deepfool"], "invalid choice"),
    "a misspelt softmax CW": (
        ["evaluate", "--classifier", "{clf}", "--vae", "{vae}", "--attacks", "cw_soft"],
        "invalid choice: 'cw_soft'",
    ),
    "eps 1.5": (["train", "--classifier", "{clf}", "--eps", "1.5"], "[0, 1]"),
    "eps NaN": (["evaluate", "--classifier", "{clf}", "--vae", "{corrupt}", "--eps", "nan"], "[0, 1]"),
    "missing classifier": (["train", "--classifier", "{dir}/none.safetensors"], "does not exist"),
    "corrupt VAE": (
        ["evaluate", "--classifier", "{clf}", "--vae", "{corrupt}", "--out", "{dir}/ev"],
        "not a gatelab Defense-VAE purifier file",
    ),
    "count 0": (["evaluate", "--classifier", "{clf}", "--vae", "{corrupt}", "--count", "0"], "got '0'"),
    "count too large": (
        ["evaluate", "--classifier", "{clf}", "--vae", "{vae}", "--count", "10001", "--out", "{dir}/ev"],
        "[1, 10000]",
    ),
    "out through a file (train-classifier)": (["train-classifier", "--out", "{file}/c.safetensors"], "is a file"),
    "out through a file (train)": (["train", "--classifier", "{clf}", "--out", "{file}/v.safetensors"], "is a file"),
    "out through a file (evaluate)": (
        ["evaluate", "--classifier", "{clf}", "--vae", "{vae}", "--out", "{file}/ev"],
        "is a file",
    ),
    "purify a missing image": (
        ["purify", "--classifier", "{clf}", "--vae", "{vae}", "{dir}/none.png", "--out", "{dir}/pu"],
        "does not exist",
    ),
    "resume from a missing checkpoint": (
        ["train", "--classifier", "{clf}", "--resume", "{dir}/none.ckpt"],
        "none.ckpt does not exist",
    ),
    "cw at an eps without a learning rate": (
        ["purify", "--classifier", "{clf}", "--vae", "{vae}", "--attack", "cw", "--eps", "0.1", "mnist"],
        "CW-L2 has a learning rate only",
    ),
    "cw_softmax at an eps without a learning rate": (
        ["train", "--classifier", "{clf}", "--attacks", "fgsm", "cw_softmax", "--eps", "0.3", "0.1"],
        "CW-L2 has a learning rate only",
    ),
    "adaptive count above count": (
        ["evaluate", "--classifier", "{clf}", "--vae", "{vae}", "--count", "5", "--adaptive-count", "6"],
        "at most --count",
    ),
    "mode 2 and PGD training at once": (
        ["train-classifier", "--vae", "{vae}", "--adversarial", "--out", "{dir}/c2.safetensors"],
        "two different trainings",
    ),
    "fine-tune without a pairs folder": (
        [
            "fine-tune",
            "--classifier",
            "{clf}",
            "--vae",
            "{vae}",
            "--pairs",
            "{dir}/none",
            "--out",
            "{dir}/m.safetensors",
        ],
        "holds no index.json",
    ),
    "corrupt mode-3 VAE": (
        ["evaluate", "--classifier", "{clf}", "--vae", "{vae}", "--mode3", "{clf}", "{corrupt}", "--out", "{dir}/ev"],
        "not a gatelab Defense-VAE purifier file",
    ),
    "an empty pairs folder name": (
        ["train", "--classifier", "{clf}", "--pairs", "", "--out", "{dir}/v.safetensors"],
        "the output path is empty",
    ),
    "rand_fgsm below its random step": (
        ["train", "--classifier", "{clf}", "--attacks", "rand_fgsm", "--eps", "0.01"],
        ">= 0.05",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_prints_one_line_and_exits_2(files, case, capsys):
    argv, message = BAD[case]
    argv = ["defense", *(a.format(**files) for a in argv), "--quiet"]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
