"""The defense attacks against their definitions, their validation, and their effect on a trained MNIST classifier."""

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gatelab.data.mnist import mnist_tensors
from gatelab.defense.attacks import (
    CW_LR,
    INSTALL,
    SoftmaxOutput,
    attack,
    library_attack,
    rand_fgsm_start,
)
from gatelab.errors import GatelabError


@pytest.fixture
def ta():
    """torchattacks, which CI installs through the Makefile; skip only where it is absent."""
    return pytest.importorskip("torchattacks", reason=f"torchattacks not installed: {INSTALL}")


def linear(classes=3, pixels=16):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(pixels, classes))
    with torch.no_grad():
        model[1].weight.mul_(20)
    return model


def batch(n=8, classes=3):
    x = torch.rand(n, 1, 4, 4)
    x[:, :, 0] = 0.0  # some pixels on the border of [0, 1], where the clip must act
    x[:, :, 1] = 1.0
    return x, torch.randint(0, classes, (n,))


def test_fgsm_is_eps_sign_grad_clipped(ta):
    model, (x, y) = linear(), batch()
    eps = 0.3
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xg), y), xg)
    expected = (x + eps * grad.sign()).clamp(0, 1)
    adv = attack(model, x, y, "fgsm", eps)
    assert torch.equal(adv, expected)
    moved = (adv - x).abs()
    assert math.isclose(moved.max().item(), eps, rel_tol=1e-6)  # interior pixels move by exactly eps
    assert bool((moved[:, :, :2] < eps).any())  # the clip cut some border pixels short


def test_rand_fgsm_is_fgsm_after_a_seeded_sign_step(ta):
    model, (x, y) = linear(), batch(64)
    eps = 0.3
    adv = attack(model, x, y, "rand_fgsm", eps, seed=3)
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= eps + 1e-6
    start = rand_fgsm_start(x, 0.05, seed=3)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(start, (x + 0.05 * noise.sign()).clamp(0, 1))
    assert torch.equal(adv, attack(model, start, y, "fgsm", eps - 0.05))
    assert torch.equal(adv, attack(model, x, y, "rand_fgsm", eps, seed=3))
    assert not torch.equal(adv, attack(model, x, y, "rand_fgsm", eps, seed=4))
    with pytest.raises(GatelabError, match="eps >= 0.05"):
        attack(model, x, y, "rand_fgsm", 0.04)


@pytest.mark.parametrize("eps", sorted(CW_LR))
def test_cw_paper_settings_reach_torchattacks(ta, eps):
    atk = library_attack(linear(), "cw", eps)
    assert isinstance(atk, ta.CW)
    assert (atk.c, atk.kappa, atk.steps, atk.lr) == (100.0, 0.0, 100, {0.2: 6, 0.25: 8, 0.3: 10, 0.35: 12}[eps])


def test_cw_settings_can_be_overridden_and_unknown_labels_need_lr(ta):
    atk = library_attack(linear(), "cw", 0.27, lr=1.5, steps=7, c=3.0)
    assert (atk.c, atk.steps, atk.lr) == (3.0, 7, 1.5)
    with pytest.raises(GatelabError, match="pass lr="):
        library_attack(linear(), "cw", 0.27)
    with pytest.raises(GatelabError, match="no setting eot_iter"):
        library_attack(linear(), "cw", 0.3, eot_iter=2)


def test_cw_runs_and_stays_in_the_image_box(ta):
    model, (x, y) = linear(), batch()
    adv = attack(model, x, y, "cw", 0.3, steps=10)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1


def test_softmax_output_returns_the_models_probabilities():
    model, (x, _) = linear(), batch()
    wrapped = SoftmaxOutput(model)
    probs = wrapped(x)
    assert probs.shape == (8, 3) and bool((probs >= 0).all())
    assert torch.allclose(probs.sum(1), torch.ones(8))
    assert torch.allclose(probs, F.softmax(model(x), 1))
    assert list(wrapped.parameters()) == list(model.parameters())  # torchattacks finds the device through them
    wrapped.eval()
    assert not model.training  # the attack's eval mode reaches the wrapped classifier


@pytest.mark.parametrize("eps", sorted(CW_LR))
def test_cw_softmax_is_torchattacks_cw_with_the_paper_settings_on_probabilities(ta, eps):
    model, (x, _) = linear(), batch()
    atk = library_attack(model, "cw_softmax", eps)
    assert isinstance(atk, ta.CW)
    assert (atk.c, atk.kappa, atk.steps, atk.lr) == (100.0, 0.0, 100, {0.2: 6, 0.25: 8, 0.3: 10, 0.35: 12}[eps])
    assert isinstance(atk.model, SoftmaxOutput) and atk.model.model is model
    assert torch.allclose(atk.get_logits(x), F.softmax(model(x), 1))  # the margin CW computes reads probabilities
    assert library_attack(model, "cw", eps).model is model  # cw stays on the logits
    assert library_attack(model, "cw_softmax", eps, lr=0.5, steps=7).lr == 0.5


def test_cw_softmax_spares_a_saturated_classifier_that_cw_on_logits_breaks(ta):
    """Logit gaps of hundreds make a softmax exactly one-hot in float32: the probability margin has no gradient, so
    CW as the authors ran it spares such images, while CW on the logits breaks every one (the reason a confident
    classifier looks robust under the paper's CW). Not all are spared: torchattacks' round trip through tanh space
    leaves an L2 term of ~1e-15 whose gradient Adam scales up to full steps (measured: 31 of 59 unchanged)."""
    torch.manual_seed(0)
    x = 0.1 + 0.8 * torch.rand(64, 1, 4, 4)  # off 0 and 1, where torchattacks' tanh space freezes a pixel
    model = linear()
    with torch.no_grad():
        model[1].weight.mul_(1000)
        probs = F.softmax(model(x), 1)
        x = x[(probs == 1).any(1) & ((probs == 0).sum(1) == 2)]  # exactly one-hot: the other two underflow to 0
        y = model(x).argmax(1)
    assert len(x) >= 16
    spared = (attack(model, x, y, "cw_softmax", 0.3) == x).flatten(1).all(1)
    assert spared.sum() >= len(x) // 3
    assert bool((model(attack(model, x, y, "cw", 0.3)).argmax(1) != y).all())


@pytest.mark.parametrize("name", ["fgsm", "rand_fgsm", "cw", "cw_softmax"])
@pytest.mark.parametrize("training", [False, True])
def test_an_attack_leaves_the_classifier_in_its_mode(ta, name, training):
    """An eval-mode classifier with dropout stays in eval mode after every attack (cw_softmax once left it training,
    so accuracies measured after it were taken with dropout on), and a training-mode one stays in training mode."""
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 3)).train(training)
    attack(model, *batch(), name, 0.3, **({"steps": 2} if name.startswith("cw") else {}))
    assert model.training is training and model[1].training is training


@pytest.mark.parametrize("name", ["pgd", "eot_pgd"])
def test_pgd_madry_settings_ball_and_seed(ta, name):
    atk = library_attack(linear(), name, 0.3)
    assert (atk.eps, atk.alpha, atk.steps, atk.random_start) == (0.3, 0.01, 40, True)
    model, (x, y) = linear(), batch()
    adv = attack(model, x, y, name, 0.1, steps=5)
    assert adv.min() >= 0 and adv.max() <= 1 and (adv - x).abs().max() <= 0.1 + 1e-6
    assert torch.equal(adv, attack(model, x, y, name, 0.1, steps=5))  # same seed, same random start
    assert not torch.equal(adv, attack(model, x, y, name, 0.1, steps=5, seed=1))


def test_eot_pgd_iterations_reach_torchattacks(ta):
    assert library_attack(linear(), "eot_pgd", 0.3, eot_iter=4).eot_iter == 4


class Reshaper(nn.Module):
    """A classifier that returns its logits in a wrong shape."""

    def __init__(self, shape):
        super().__init__()
        self.inner, self.shape = linear(), shape

    def forward(self, x):
        return self.shape(self.inner(x))


@pytest.mark.parametrize(
    "args, match",
    [
        (dict(name="deepfool"), "accepted: fgsm, rand_fgsm, cw, cw_softmax, pgd, eot_pgd"),
        (dict(eps=-0.1), r"eps must be a number in \[0, 1\]"),
        (dict(eps=1.5), r"eps must be a number in \[0, 1\]"),
        (dict(eps=float("nan")), r"eps must be a number in \[0, 1\]"),
        (dict(eps="0.3"), r"eps must be a number in \[0, 1\]"),
        (dict(x=torch.rand(8, 1, 4, 4) + 0.5), r"must lie in \[0, 1\]"),
        (dict(x=torch.rand(8, 1, 4, 4) - 0.5), r"must lie in \[0, 1\]"),
        (dict(x=torch.full((8, 1, 4, 4), float("nan"))), r"must lie in \[0, 1\]"),
        (dict(x=torch.rand(8, 4, 4)), r"shape \(N, C, H, W\)"),
        (dict(x=torch.rand(0, 1, 4, 4)), r"shape \(N, C, H, W\)"),
        (dict(x=torch.randint(0, 2, (8, 1, 4, 4))), "floating-point"),
        (dict(y=torch.zeros(7, dtype=torch.long)), "labels must be an int64 tensor of shape"),
        (dict(y=torch.zeros(8)), "labels must be an int64 tensor of shape"),
        (dict(y=torch.full((8,), 3)), r"labels must lie in \[0, 3\)"),
        (dict(model=Reshaper(lambda t: t.sum(1))), r"logits of shape \(N, classes\)"),
        (dict(model=Reshaper(lambda t: t.reshape(8, 3, 1))), r"logits of shape \(N, classes\)"),
        (dict(model=Reshaper(lambda t: t[:4])), r"logits of shape \(N, classes\)"),
        (dict(model=Reshaper(lambda t: (t,))), r"logits of shape \(N, classes\)"),
    ],
)
def test_bad_input_is_refused(args, match):
    x, y = batch()
    call = dict(model=linear(), x=x, y=y, name="fgsm", eps=0.3) | args
    with pytest.raises(GatelabError, match=match):
        attack(**call)


def test_validation_does_not_move_batchnorm_or_the_mode():
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(16, 3)).train()
    before = model[0].running_mean.clone()
    with pytest.raises(GatelabError):
        attack(model, *batch(), "fgsm", 2.0)  # refused on eps before the model runs
    with pytest.raises(GatelabError):
        attack(model, batch()[0], torch.full((8,), 5), "fgsm", 0.3)  # refused after the probe
    assert model.training and torch.equal(model[0].running_mean, before)


def test_missing_torchattacks_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # makes `import torchattacks` raise ImportError
    with pytest.raises(GatelabError, match=r"pip install --no-deps torchattacks==3\.5\.1"):
        attack(linear(), *batch(), "fgsm", 0.3)


@pytest.fixture(scope="module")
def mnist_softmax():
    """A softmax classifier trained for a moment on 4,000 MNIST training images, and 1,000 held-out training images."""
    x, y = mnist_tensors("mnist", "train")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x[:4000]), y[:4000]).backward()
        opt.step()
    return model, x[50000:51000], y[50000:51000]


@pytest.mark.parametrize("name", ["fgsm", "rand_fgsm", "cw", "pgd"])
def test_attacks_break_a_trained_mnist_softmax(ta, mnist_softmax, name):
    """About 88% clean; every attack at eps 0.3 (CW at the paper's settings) leaves under 5% (measured: 0-1.5%)."""
    model, x, y = mnist_softmax
    kw = {"steps": 10, "alpha": 0.05} if name == "pgd" else {}
    n = 200 if name in ("cw", "pgd") else len(x)
    clean = (model(x[:n]).argmax(1) == y[:n]).float().mean().item()
    adv = attack(model, x[:n], y[:n], name, 0.3, **kw)
    robust = (model(adv).argmax(1) == y[:n]).float().mean().item()
    assert clean > 0.85
    assert robust < 0.05, f"{name}: accuracy {clean:.3f} clean, {robust:.3f} attacked"
