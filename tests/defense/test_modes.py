"""Defense-VAE's modes 2 and 3, the PGD-trained peer and the black-box substitute: what each trains on, exact
resume, that the originals stay untouched, floors on real MNIST, and refusals."""

import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gatelab.checkpoint import Interrupted
from gatelab.data.mnist import mnist_tensors
from gatelab.defense import (
    AdversarialConfig,
    ClassifierConfig,
    DefenseVAE,
    EndToEndConfig,
    SubstituteConfig,
    VAEConfig,
    accuracy,
    adversarial_training,
    attack,
    fine_tune,
    jacobian_augmentation,
    train_classifier,
    train_substitute,
)
from gatelab.defense import end_to_end as end_to_end_module
from gatelab.defense.vae import loss as vae_loss
from gatelab.errors import GatelabError

pytest.importorskip("torchattacks")


@pytest.fixture(scope="module")
def mlp():
    """Model D trained for 3 epochs on 5,000 MNIST training images (about 91% accurate)."""
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model, _ = train_classifier(ClassifierConfig(model="D", epochs=3, train_examples=5000, val_size=1000), quiet=True)
    torch.set_num_threads(before)
    return model


def triples(n=48, seed=0):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 1, 28, 28, generator=gen)
    return (clean + 0.3 * torch.randn(n, 1, 28, 28, generator=gen)).clamp(0, 1), clean, torch.randint(0, 10, (n,))


def test_mode_2_trains_on_purified_images(monkeypatch, one_thread):
    adv, clean, _ = triples(16)
    purifier = DefenseVAE(VAEConfig(latent=4, epochs=1)).fit(adv, clean, quiet=True)
    seen = []
    purify = DefenseVAE.purify

    def recording(self, x, **kw):
        out = purify(self, x, **kw)
        seen.append((len(x), out))
        return out

    monkeypatch.setattr(DefenseVAE, "purify", recording)
    config = ClassifierConfig(model="D", epochs=1, train_examples=64, val_size=32)
    retrained, _ = train_classifier(config, purifier=purifier, quiet=True)
    assert [n for n, _ in seen] == [64, 32]  # the training images, then the validation images
    plain, _ = train_classifier(config, quiet=True)  # same seed, same initial weights, other inputs
    assert not torch.equal(retrained.net[1].weight, plain.net[1].weight)


def test_end_to_end_lowers_the_classification_loss_and_leaves_the_originals(one_thread):
    adv, clean, labels = triples(64)
    purifier = DefenseVAE(VAEConfig(latent=8, epochs=1)).fit(adv, clean, quiet=True)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    before_vae = {k: v.clone() for k, v in purifier.vae_.state_dict().items()}
    before_net = {k: v.clone() for k, v in net.state_dict().items()}
    config = EndToEndConfig(epochs=3, lr=1e-3, weight=10.0)
    tuned_net, tuned, history = fine_tune(net, purifier, adv, clean, labels.numpy(), config, quiet=True)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["classification"] < history[0]["classification"], history  # it learns the random labels
    assert all(torch.equal(v, purifier.vae_.state_dict()[k]) for k, v in before_vae.items())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before_net.items())
    assert tuned_net is not net and not tuned_net.training and not tuned.vae_.training
    assert tuned.purify(adv).shape == adv.shape and tuned.config == purifier.config


def test_the_default_weight_lets_the_classifier_steer_the_vae(mlp, one_thread):
    # On real MNIST FGSM pairs, the classification term's gradient on the VAE against the summed BCE's: at weight 1
    # it is about a tenth (0.11 here: the VAE would mostly go on denoising); at the default it must pull at least as
    # hard.
    x, y = mnist_tensors("mnist", "train")
    x, y = x[:256], y[:256]
    adv = attack(mlp, x, y, "fgsm", 0.3)
    vae = DefenseVAE(VAEConfig(epochs=3)).fit(adv, x, quiet=True).vae_.train()
    recon, mu, logvar = vae(adv[:64])
    params = list(vae.parameters())
    terms = (vae_loss(recon, x[:64], mu, logvar, 0.0), F.cross_entropy(mlp(recon), y[:64], reduction="sum"))
    norms = [torch.nn.utils.get_total_norm(torch.autograd.grad(t, params, retain_graph=True)) for t in terms]
    share = float(norms[1] / norms[0])
    assert share < 0.2, share
    assert EndToEndConfig().weight * share >= 1.0, share


def test_end_to_end_resumes_exactly(tmp_path, monkeypatch, one_thread):
    adv, clean, labels = triples(48)  # 3 steps an epoch
    purifier = DefenseVAE(VAEConfig(latent=4, epochs=1)).fit(adv, clean, quiet=True)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    config = EndToEndConfig(epochs=2)
    whole_net, whole, _ = fine_tune(net, purifier, adv, clean, labels, config, quiet=True)
    ckpt, calls, original = tmp_path / "e2e.pt", [], end_to_end_module.loss

    def interrupting(*args):
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args)

    monkeypatch.setattr(end_to_end_module, "loss", interrupting)
    with pytest.raises(Interrupted):
        fine_tune(net, purifier, adv, clean, labels, config, quiet=True, checkpoint=ckpt)
    monkeypatch.setattr(end_to_end_module, "loss", original)
    net2, resumed, _ = fine_tune(net, purifier, adv, clean, labels, config, quiet=True, checkpoint=ckpt, resume=ckpt)
    assert resumed.history_ == whole.history_
    for key, value in whole.vae_.state_dict().items():
        assert torch.equal(value, resumed.vae_.state_dict()[key]), key
    assert torch.equal(whole_net[1].weight, net2[1].weight)


def test_end_to_end_refuses_bad_input():
    adv, clean, labels = triples(8)
    purifier = DefenseVAE(VAEConfig(latent=4, epochs=1)).fit(adv, clean, quiet=True)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(GatelabError, match="int64 label"):
        fine_tune(net, purifier, adv, clean, labels[:5], quiet=True)
    with pytest.raises(GatelabError, match="DefenseVAE"):
        fine_tune(net, purifier.vae_, adv, clean, labels, quiet=True)
    with pytest.raises(GatelabError, match="weight"):
        EndToEndConfig(weight=float("nan")).validate()


def test_pgd_training_resists_pgd_better_and_resumes_exactly(mlp, tmp_path, monkeypatch, one_thread):
    x, y = mnist_tensors("mnist", "train")
    xe, ye = x[-300:], y[-300:]  # not among the first 5,000 + 1,000 used for training
    config = AdversarialConfig(model="D", epochs=2, train_examples=2000, val_size=1000, steps=5, alpha=0.1)
    robust, history = adversarial_training(config, init=mlp, quiet=True)
    assert [h["epoch"] for h in history] == [1, 2] and not robust.training
    pgd = {m: accuracy(m, attack(m, xe, ye, "pgd", 0.3, steps=10, alpha=0.05), ye) for m in (mlp, robust)}
    assert pgd[robust] > pgd[mlp] + 0.05, pgd  # measured 0.00 -> 0.103 (an MLP gets little more at eps 0.3)

    small = AdversarialConfig(model="D", epochs=2, batch_size=50, train_examples=100, val_size=50, steps=2, alpha=0.1)
    whole, _ = adversarial_training(small, quiet=True)
    ckpt, calls, original = tmp_path / "pgd.pt", [], F.cross_entropy

    def interrupting(*args, **kw):
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) == 2 * 3 + 3:  # inside the second epoch (2 batches of 2 PGD steps + 1 training step)
                os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kw)

    monkeypatch.setattr(F, "cross_entropy", interrupting)
    with pytest.raises(Interrupted):
        adversarial_training(small, quiet=True, checkpoint=ckpt)
    monkeypatch.setattr(F, "cross_entropy", original)
    resumed, _ = adversarial_training(small, quiet=True, checkpoint=ckpt, resume=ckpt)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    with pytest.raises(GatelabError, match="steps"):
        AdversarialConfig(steps=0).validate()


def test_jacobian_augmentation_is_a_clipped_sign_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(xg).gather(1, y[:, None]).sum(), xg)
    for lam in (0.1, -0.1):
        assert torch.equal(jacobian_augmentation(net, x, y, lam), (x + lam * grad.sign()).clamp(0, 1))


def test_substitute_mimics_the_oracle_and_its_fgsm_transfers(mlp, one_thread):
    x, y = mnist_tensors("mnist", "test")
    config = SubstituteConfig(rounds=3, epochs=5)
    sub, history = train_substitute(mlp, x[-150:], config, quiet=True)
    assert [h["images"] for h in history] == [150, 300, 600]  # doubled by every augmentation
    xe, ye = x[:300], y[:300]
    agree = float((sub(xe).argmax(1) == mlp(xe).argmax(1)).float().mean())
    assert agree > 0.5, agree  # measured 0.65; an untrained substitute agrees on about 0.1
    with torch.no_grad():
        guess = sub(xe).argmax(1)
    transferred = accuracy(mlp, attack(sub, xe, guess, "fgsm", 0.3), ye)
    assert transferred < accuracy(mlp, xe, ye) - 0.3, transferred  # measured 0.93 -> 0.20
    with pytest.raises(GatelabError, match="lam"):
        train_substitute(mlp, x[-150:], SubstituteConfig(lam=0.0))
    with pytest.raises(GatelabError, match="substitute"):
        SubstituteConfig(model="Z").validate()
    assert np.isfinite(history[-1]["agreement"])
