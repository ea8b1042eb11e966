"""evaluate(): FGSM lowers accuracy, purification by a briefly trained Defense-VAE raises it again, the adaptive PGD
through the purifier lowers it below the oblivious number; the table's PNG and refusals."""

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gatelab.data.mnist import mnist_tensors
from gatelab.defense import DefenseVAE, VAEConfig, accuracy_table_png, evaluate, load_pairs, make_pairs
from gatelab.defense import attacks as attacks_module
from gatelab.errors import GatelabError

pytest.importorskip("torchattacks")


@pytest.fixture(scope="module")
def softmax():
    """A softmax on MNIST trained for a moment on 2000 training digits, and 100 other training digits to test on."""
    x, y = mnist_tensors("mnist", "train")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(50):
        opt.zero_grad()
        F.cross_entropy(model(x[:2000]), y[:2000]).backward()
        opt.step()
    return model.eval(), x, y


def test_purification_helps_and_the_adaptive_attack_hurts(softmax, tmp_path, monkeypatch, one_thread):
    model, x, y = softmax
    # 640 FGSM pairs, 2 epochs (80 steps of the paper's lr and batch): a brief training that still shows the effect
    folder = make_pairs(model, x[2000:2640], y[2000:2640], tmp_path / "pairs", ("fgsm",), (0.3,), quiet=True)
    purifier = DefenseVAE(VAEConfig(latent=32, epochs=2)).fit(*load_pairs(folder), quiet=True)
    monkeypatch.setattr(attacks_module, "PGD_STEPS", 10)  # the test's budget: 10 of the 40 PGD steps
    table = evaluate(model, x[5000:5100], y[5000:5100], ["fgsm"], purifier=purifier, adaptive=True, quiet=True)
    assert set(table) == {"clean", "fgsm", "adaptive_pgd"} and set(table["adaptive_pgd"]) == {
        "undefended",
        "defense_vae",
    }
    clean, fgsm, adaptive = table["clean"], table["fgsm"], table["adaptive_pgd"]["defense_vae"]
    assert fgsm["undefended"] < clean["undefended"] - 0.5, table  # measured 0.86 -> 0.00
    assert fgsm["defense_vae"] >= fgsm["undefended"] + 0.08, table  # measured 0.16
    assert adaptive < fgsm["defense_vae"], table  # measured 0.05: the gradient flows through the purifier

    path = accuracy_table_png(table, tmp_path / "table.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_without_purifier_only_the_undefended_column(softmax):
    model, x, y = softmax
    table = evaluate(model, x[5000:5010], y[5000:5010], ["fgsm", "rand_fgsm"], batch_size=4, quiet=True)
    assert list(table) == ["clean", "fgsm", "rand_fgsm"] and all(list(v) == ["undefended"] for v in table.values())
    assert all(0 <= v["undefended"] <= 1 for v in table.values())


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"attacks": ["nope"]}, "nope"),
        ({"eps": 2.0}, r"\[0, 1\]"),
        ({"batch_size": 0}, "batch_size"),
        ({"adaptive": True, "adaptive_images": 5}, "adaptive_images"),
        ({"defences": {"undefended": (None, None)}}, "new names"),
        ({"purifier": "vae"}, "DefenseVAE"),
        ({"labels": torch.zeros(3, dtype=torch.long)}, "labels"),
    ],
)
def test_bad_input_is_refused(softmax, kw, match):
    model, x, y = softmax
    args = {"images": x[:4], "labels": y[:4], "attacks": ["fgsm"], "quiet": True, **kw}
    with pytest.raises(GatelabError, match=match):
        evaluate(model, **args)


def test_more_defences_black_box_and_adaptive_subset(softmax, monkeypatch):
    """Each defence's white-box attack is crafted on its own classifier; the substitute's FGSM is shared."""
    model, x, y = softmax
    other = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    other.load_state_dict(model.state_dict())
    crafted, original = [], attacks_module.attack

    def recording(net, images, labels, name, eps, **kw):
        crafted.append((net, name, len(images)))
        return original(net, images, labels, name, eps, **kw)

    evaluate_module = importlib.import_module("gatelab.defense.evaluate")  # the package's `evaluate` is the function
    monkeypatch.setattr(evaluate_module, "attack", recording)
    monkeypatch.setattr(attacks_module, "PGD_STEPS", 3)
    table = evaluate(
        model,
        x[5000:5012],
        y[5000:5012],
        ["fgsm"],
        defences={"copy": (other, None)},
        substitute=model,
        adaptive=True,
        adaptive_images=5,
        batch_size=8,
        quiet=True,
    )
    assert list(table) == ["clean", "fgsm", "black_box_fgsm", "adaptive_pgd"]
    assert all(set(v) == {"undefended", "copy"} for v in table.values())
    assert table["fgsm"]["copy"] == table["fgsm"]["undefended"]  # the same weights, attacked on their own
    assert table["black_box_fgsm"]["copy"] == table["black_box_fgsm"]["undefended"] == table["fgsm"]["copy"]
    fgsm = [(net, n) for net, name, n in crafted if name == "fgsm"]
    # per batch (8 and 4 images): each classifier once (the fgsm row), then the substitute once (the black-box row)
    assert fgsm == [(model, 8), (other, 8), (model, 8), (model, 4), (other, 4), (model, 4)]
    assert [n for _, name, n in crafted if name == "pgd"] == [5, 5]  # only the first 5 images, once per column
    assert all(round(5 * a, 6).is_integer() for a in table["adaptive_pgd"].values())


def test_bad_table_is_refused(tmp_path):
    with pytest.raises(GatelabError, match="non-empty dict"):
        accuracy_table_png({}, tmp_path / "t.png")
