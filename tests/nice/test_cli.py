"""The `gatelab nice` commands end to end on real MNIST, their one-line errors, atomic folders and kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from gatelab.checkpoint import load_state
from gatelab.cli import main
from gatelab.data import mnist_tensors
from gatelab.nice import ClassifierConfig, accuracy, load_classifier, load_jpegs, save_classifier, train_classifier


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    config = ClassifierConfig(dataset="mnist", epochs=1, batch_size=32, lr=3e-3, train_examples=4000, val_size=500)
    model, _ = train_classifier(config, quiet=True)
    xt, yt = mnist_tensors("mnist", "test")
    acc = accuracy(model, xt, yt)
    assert acc > 0.89  # a floor on real data after 110 steps (91% measured)
    path = tmp_path_factory.mktemp("nice") / "classifier.safetensors"
    save_classifier(model, config, path, acc)
    return path


def run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse rejects a malformed option while parsing
        return exc.code


def test_classifier_file_round_trip(classifier_file):
    model, config = load_classifier(classifier_file)
    assert config.dataset == "mnist" and config.train_examples == 4000
    x = torch.rand(3, 1, 28, 28)
    again, _ = load_classifier(classifier_file)
    assert torch.equal(model(x), again(x))


def test_train_masks_then_compress_and_explain(classifier_file, tmp_path, capsys):
    masks = tmp_path / "masks.safetensors"
    clf = ["--classifier", str(classifier_file)]
    argv = ["nice", "train", *clf, "--epochs", "1", "--train-examples", "200", "--batch-size", "50", "--lam", "2"]
    assert run([*argv, "--out", str(masks), "--quiet"]) == 0
    assert masks.is_file() and load_state(f"{masks}.checkpoint.pt")["epoch"] == 1
    out = tmp_path / "jpegs"
    assert run(["nice", "compress", "mnist", *clf, "--masks", str(masks), "--count", "20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ratio" in printed and "accuracy" in printed
    assert load_jpegs(out).images.shape == (20, 1, 28, 28)
    explain = tmp_path / "explain"
    argv = ["nice", "explain", "mnist", *clf, "--masks", str(masks), "--count", "8", "--baselines", "saliency"]
    assert run([*argv, "--panels", "3", "--seed", "1", "--out", str(explain)]) == 0
    scores = json.loads((explain / "scores.json").read_text())
    assert set(scores["scores"]) == {"nice", "saliency", "random"} and scores["reference"] == "zeros"
    blurred = tmp_path / "explain-blur"
    assert run([*argv, "--seed", "1", "--reference", "blur", "--out", str(blurred)]) == 0
    again = json.loads((blurred / "scores.json").read_text())
    assert again["reference"] == "blur" and again["mask_density"] == scores["mask_density"]
    for name in ("nice", "saliency"):  # the same maps, scored against another reference
        assert again["scores"][name]["deletion_auc"] != scores["scores"][name]["deletion_auc"]
    assert (explain / "panels.png").stat().st_size > 0
    assert len(list((explain / "masks").glob("*.png"))) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "explain",
        "explain-blur",
        "jpegs",
        "masks.safetensors",
        "masks.safetensors.checkpoint.pt",
    ]


def test_explain_an_image_file_per_image(classifier_file, tmp_path):
    x, _ = mnist_tensors("mnist", "test")
    png = tmp_path / "digit.png"
    Image.fromarray((x[0, 0] * 255).byte().numpy()).save(png)
    out = tmp_path / "explain"
    argv = ["nice", "explain", str(png), "--classifier", str(classifier_file), "--steps", "30", "--baselines", "none"]
    assert run([*argv, "--out", str(out)]) == 0
    assert Image.open(out / "masks" / "digit.png").size == (28, 28)


def test_per_image_compression_optimises_block_gates_against_the_stored_background(
    classifier_file, tmp_path, capsys, monkeypatch
):
    from gatelab.nice import NICE

    configs, mask = [], NICE.mask
    monkeypatch.setattr(NICE, "mask", lambda self, images: (configs.append(self.config), mask(self, images))[1])
    argv = ["nice", "compress", "mnist", "--classifier", str(classifier_file), "--count", "50", "--lam", "1"]
    assert run([*argv, "--tables", "shared", "--out", str(tmp_path / "out")]) == 0
    (config,) = configs
    assert (config.mode, config.background, config.lowres_factor, config.cell) == ("per_image", "lowres", 8, 8)
    printed = capsys.readouterr().out
    ratio = float(printed.split("-> ratio ")[1].split()[0])
    assert ratio < 0.8  # whole blocks dropped (per-pixel gates against black saved almost nothing)


@pytest.mark.parametrize("command", ["explain", "compress"])
def test_a_failure_leaves_no_half_filled_folder(classifier_file, tmp_path, monkeypatch, command, capsys):
    def fail(*args, **kw):
        raise OSError(28, "No space left on device")

    if command == "explain":
        monkeypatch.setattr("gatelab.nice.metrics.plot_curves", fail)  # after the masks are written
    else:
        monkeypatch.setattr(sys.modules["gatelab.nice.compress"], "write_json", fail)  # the index, written last
    out = tmp_path / "out"
    argv = ["nice", command, "mnist", "--classifier", str(classifier_file), "--count", "2", "--steps", "2"]
    assert run([*argv, *(["--baselines", "none"] if command == "explain" else []), "--out", str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary copy


def test_train_classifier_reads_the_test_split_once_after_training(tmp_path, monkeypatch, split_reads, capsys):
    import gatelab.nice.classifiers as classifiers

    trained = classifiers.train_classifier
    monkeypatch.setattr(
        classifiers, "train_classifier", lambda *a, **k: (trained(*a, **k), split_reads.append("done"))[0]
    )
    out = tmp_path / "clf.safetensors"
    argv = ["nice", "train-classifier", "--train-examples", "300", "--val-size", "100", "--epochs", "1"]
    assert run([*argv, "--out", str(out), "--quiet"]) == 0
    assert split_reads == ["train", "done", "test"]
    assert "test accuracy" in capsys.readouterr().out
    # resuming from something that is not a checkpoint: one line
    assert run([*argv, "--out", str(tmp_path / "c"), "--resume", str(out), "--quiet"]) == 2
    assert "is not a gatelab classifier mnist checkpoint" in capsys.readouterr().err
    _, config = load_classifier(out)
    assert config.val_size == 100
    # fine-tuning it on mixed-resolution images
    tuned = tmp_path / "tuned.safetensors"
    assert run([*argv, "--init", str(out), "--augment", "mixed_resolution", "--out", str(tuned), "--quiet"]) == 0
    _, config = load_classifier(tuned)
    assert config.augment == "mixed_resolution"


def test_bad_input_prints_one_line_and_exits_2(classifier_file, tmp_path, capsys, monkeypatch):
    def never(*args, **kw):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr("gatelab.nice.classifiers.train_classifier", never)
    monkeypatch.setattr("gatelab.nice.masks.NICE.fit", never)
    wrong_size = tmp_path / "big.png"
    Image.new("L", (32, 32)).save(wrong_size)
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    a_file = tmp_path / "file"
    a_file.write_text("")
    clf = ["--classifier", str(classifier_file)]
    cases = [
        (["nice", "explain", str(wrong_size), *clf], "32x32 pixels"),
        (["nice", "explain", str(not_image), *clf], "not an image file"),
        (["nice", "compress", "mnist", "--classifier", str(tmp_path / "missing.safetensors")], "does not exist"),
        (["nice", "compress", "mnist", *clf, "--quality", "0"], "quality"),
        (["nice", "compress", "mnist", *clf, "--quality", "101"], "quality"),
        (["nice", "compress", "mnist", *clf, "--count", "0"], "--count"),
        (["nice", "compress", "mnist", *clf, "--factor", "-8"], "--factor"),
        (["nice", "explain", "mnist", *clf, "--baselines", "lime"], "unknown baseline"),
        (["nice", "explain", "mnist", *clf, "--panels", "0"], "--panels"),
        (["nice", "explain", "mnist", *clf, "--lam", "nan"], "--lam"),
        (["nice", "explain", "mnist", *clf, "--out", str(a_file)], "is an existing file"),
        (["nice", "explain", "mnist", *clf, "--device", "tpu"], "unknown device"),
        (["nice", "train", *clf, "--lam", "-1"], "--lam"),
        (["nice", "train", *clf, "--lambda", "1"], "unrecognized arguments: --lambda"),
        (["nice", "train", *clf, "--estimator", "reinforce"], "invalid choice"),
        (["nice", "train", *clf, "--out", str(a_file / "masks.safetensors")], "is a file, not a folder"),
        (["nice", "train-classifier", "--epochs", "0"], "--epochs"),
        (["nice", "train-classifier", "--train-examples", "0"], "--train-examples"),
        (["nice", "train-classifier", "--checkpoint-every", "0"], "--checkpoint-every"),
        (["nice", "train-classifier", "--out", str(tmp_path)], "is an existing folder"),
        (["nice", "train-classifier", "--init", str(tmp_path / "none.safetensors")], "does not exist"),
    ]
    for argv, message in cases:
        assert run(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (argv, err)


def test_killed_training_resumes_from_its_intact_checkpoint(tmp_path, capsys):
    """SIGKILL mid-epoch (no chance to save), then --resume: it finishes, starting where the checkpoint was."""
    out, ckpt = tmp_path / "clf.safetensors", tmp_path / "clf.safetensors.checkpoint.pt"
    argv = ["nice", "train-classifier", "--train-examples", "2200", "--val-size", "200", "--epochs", "2"]
    argv += ["--batch-size", "50", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    command = [sys.executable, "-m", "gatelab", *argv, "--checkpoint-every", "0.2"]
    first = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, "training ended before it could be killed"
    saved = load_state(ckpt)  # intact: written atomically, whatever the moment of the kill
    assert saved["epoch"] * 40 + saved["step"] >= 1  # 2000 images in batches of 50: 40 steps an epoch
    assert not out.exists()

    assert run([*argv, "--resume", str(ckpt)]) == 0  # the same command, resumed (here in this process)
    err = capsys.readouterr().err
    assert f"resuming {ckpt} at epoch {saved['epoch'] + 1}, step {saved['step']}" in err
    assert err.count("epoch 1/2:") == (saved["epoch"] == 0)  # finished epochs are not run again
    assert out.is_file() and load_state(ckpt)["epoch"] == 2


def test_explain_and_compress_default_to_their_own_l0_strengths():
    from gatelab.cli import build_parser
    from gatelab.nice.masks import COMPRESS_LAM, NICEConfig

    parser = build_parser()
    explain = parser.parse_args(["nice", "explain", "mnist", "--classifier", "c.safetensors"])
    compress = parser.parse_args(["nice", "compress", "mnist", "--classifier", "c.safetensors"])
    assert (explain.lam, compress.lam) == (NICEConfig().lam, COMPRESS_LAM) == (0.5, 2.0)
