"""The `gatelab nice` commands end to end on real MNIST, and their one-line errors."""

import json

import pytest
import torch
from PIL import Image

from gatelab.cli import main
from gatelab.nice import ClassifierConfig, load_classifier, load_jpegs, save_classifier, train_classifier


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    torch.manual_seed(0)
    config = ClassifierConfig(dataset="mnist", epochs=2, train_examples=10000)
    model, acc = train_classifier(config, progress=False)
    assert acc > 0.9  # a floor on real data after a short training
    path = tmp_path_factory.mktemp("nice") / "classifier.safetensors"
    save_classifier(model, config, path, acc)
    return path


def test_classifier_file_round_trip(classifier_file):
    model, config = load_classifier(classifier_file)
    assert config.dataset == "mnist"
    x = torch.rand(3, 1, 28, 28)
    again, _ = load_classifier(classifier_file)
    assert torch.equal(model(x), again(x))


def test_train_masks_then_compress_and_explain(classifier_file, tmp_path, capsys):
    masks = tmp_path / "masks.safetensors"
    assert (
        main(
            [
                "nice",
                "train",
                "--classifier",
                str(classifier_file),
                "--epochs",
                "1",
                "--train-examples",
                "1000",
                "--lam",
                "2",
                "--out",
                str(masks),
                "--quiet",
            ]
        )
        == 0
    )
    assert masks.is_file()
    out = tmp_path / "jpegs"
    assert (
        main(
            [
                "nice",
                "compress",
                "mnist",
                "--classifier",
                str(classifier_file),
                "--masks",
                str(masks),
                "--count",
                "40",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "ratio" in printed and "accuracy" in printed
    folder = load_jpegs(out)
    assert folder.images.shape == (40, 1, 28, 28)
    explain = tmp_path / "explain"
    assert (
        main(
            [
                "nice",
                "explain",
                "mnist",
                "--classifier",
                str(classifier_file),
                "--masks",
                str(masks),
                "--count",
                "20",
                "--baselines",
                "saliency,occlusion",
                "--panels",
                "3",
                "--out",
                str(explain),
            ]
        )
        == 0
    )
    scores = json.loads((explain / "scores.json").read_text())
    assert set(scores["scores"]) == {"nice", "saliency", "occlusion", "random"}
    assert (explain / "panels.png").stat().st_size > 0
    assert len(list((explain / "masks").glob("*.png"))) == 20


def test_explain_an_image_file_per_image(classifier_file, tmp_path, capsys):
    from gatelab.data import mnist_tensors

    x, _ = mnist_tensors("mnist", "test")
    png = tmp_path / "digit.png"
    Image.fromarray((x[0, 0] * 255).byte().numpy()).save(png)
    out = tmp_path / "explain"
    assert (
        main(
            [
                "nice",
                "explain",
                str(png),
                "--classifier",
                str(classifier_file),
                "--steps",
                "30",
                "--baselines",
                "none",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    mask = Image.open(out / "masks" / "digit.png")
    assert mask.size == (28, 28)


def test_bad_input_prints_one_line_and_exits_2(classifier_file, tmp_path, capsys):
    wrong_size = tmp_path / "big.png"
    Image.new("L", (32, 32)).save(wrong_size)
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    cases = [
        (["nice", "explain", str(wrong_size), "--classifier", str(classifier_file)], "32x32 pixels"),
        (["nice", "explain", str(not_image), "--classifier", str(classifier_file)], "not an image file"),
        (["nice", "compress", "mnist", "--classifier", str(tmp_path / "missing.safetensors")], "does not exist"),
        (["nice", "compress", "mnist", "--classifier", str(classifier_file), "--quality", "0"], "quality"),
        (["nice", "explain", "mnist", "--classifier", str(classifier_file), "--baselines", "lime"], "unknown baseline"),
        (["nice", "train", "--classifier", str(classifier_file), "--lam", "-1"], "lam must be >= 0"),
    ]
    for argv, message in cases:
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse rejects a malformed option while parsing
            rc = exc.code
        assert rc == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (argv, err)
