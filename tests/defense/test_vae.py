"""VAE18: shapes against the paper's architecture, the loss against a hand computation, purify, config checks."""

import math

import pytest
import torch

from gatelab.defense import VAE18, VAEConfig, kl_divergence, loss
from gatelab.errors import GatelabError


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VAE18()


def test_shapes(vae):
    x = torch.rand(4, 1, 28, 28)
    vae.train()
    assert vae.encoder(x).shape == (4, 256, 4, 4)  # 28 -> 28 -> 16 -> 8 -> 4
    assert vae.encoder(x).flatten(1).shape == (4, 4096)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (4, 128)
    recon, mu2, logvar2 = vae(x)
    assert recon.shape == (4, 1, 28, 28)
    assert ((recon > 0) & (recon < 1)).all()
    assert torch.equal(mu, mu2) and torch.equal(logvar, logvar2)
    assert all(m.bias is None for m in vae.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))
    assert VAE18(latent=8).encode(x)[0].shape == (4, 8)


def test_purify_decodes_mu_in_eval_mode_and_keeps_the_mode(vae):
    torch.manual_seed(1)
    x = torch.rand(5, 1, 28, 28)
    vae.train()
    vae(x)  # moves the running statistics away from their initial values
    out = vae.purify(x)
    assert vae.training  # restored
    vae.eval()
    expected = vae.decode(vae.encode(x)[0])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(vae(x)[0], expected)  # eval-mode forward uses mu, not a sample
    torch.testing.assert_close(vae.purify(x[:2]), out[:2], rtol=1e-5, atol=1e-6)  # independent of the batch
    assert not vae.purify(x).requires_grad


def test_loss_against_a_hand_computation():
    recon = torch.tensor([[0.9, 0.2], [0.4, 0.7]])
    target = torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    mu = torch.tensor([[0.5, -1.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    bce = -sum(t * math.log(p) + (1 - t) * math.log(1 - p) for p, t in [(0.9, 1.0), (0.2, 0.0), (0.4, 0.5), (0.7, 1.0)])
    # KL(N(mu, s^2) || N(0, 1)) = 0.5 * sum(mu^2 + s^2 - 1 - log s^2)
    kl = 0.5 * ((0.25 + 1 - 1 - 0) + (1 + 2 - 1 - math.log(2.0)))
    assert kl_divergence(mu, logvar).item() == pytest.approx(kl, rel=1e-6)
    assert loss(recon, target, mu, logvar, 0.5).item() == pytest.approx(bce + 0.5 * kl, rel=1e-6)
    assert loss(recon, target, mu, logvar, 0.0).item() == pytest.approx(bce, rel=1e-6)


def test_r_zero_is_bce_alone_even_when_the_kl_overflows():
    torch.manual_seed(2)
    recon, target = torch.rand(3, 1, 28, 28) * 0.98 + 0.01, torch.rand(3, 1, 28, 28)
    mu, logvar = torch.zeros(3, 4), torch.full((3, 4), 100.0)  # exp(100) is inf in float32
    assert math.isinf(kl_divergence(mu, logvar).item())
    expected = torch.nn.functional.binary_cross_entropy(recon, target, reduction="sum")
    assert torch.equal(loss(recon, target, mu, logvar, 0.0), expected)
    assert torch.equal(loss(recon, target, mu, logvar, 0), expected)


def test_loss_refuses_bad_input():
    recon, mu = torch.rand(2, 1, 28, 28), torch.zeros(2, 4)
    with pytest.raises(GatelabError, match="one shape"):
        loss(recon, torch.rand(2, 784), mu, mu, 0.0)
    with pytest.raises(GatelabError, match="one shape"):
        loss(recon, recon, mu, torch.zeros(2, 5), 0.0)
    for r in (-1.0, float("nan"), float("inf"), "0", True):
        with pytest.raises(GatelabError, match="KL weight"):
            loss(recon, recon, mu, mu, r)


def test_bad_images_and_codes(vae):
    with pytest.raises(GatelabError, match=r"\(N, 1, 28, 28\)"):
        vae.encode(torch.rand(2, 3, 28, 28))
    with pytest.raises(GatelabError, match=r"\(N, 128\)"):
        vae.decode(torch.rand(2, 64))
    for bad in (torch.full((1, 1, 28, 28), 1.5), torch.full((1, 1, 28, 28), float("nan"))):
        with pytest.raises(GatelabError, match=r"\[0, 1\]"):
            vae.purify(bad)
    for latent in (0, -3, 2.5, True):
        with pytest.raises(GatelabError, match="latent"):
            VAE18(latent=latent)


def test_config_defaults_and_validation():
    config = VAEConfig().validate()
    assert (config.latent, config.r, config.lr, config.batch_size, config.epochs) == (128, 0.0, 5e-4, 16, 5)
    bad = [
        ("latent", 0),
        ("latent", 1.5),
        ("batch_size", 0),
        ("batch_size", -16),
        ("epochs", 0),
        ("epochs", True),
        ("lr", 0.0),
        ("lr", -1e-3),
        ("lr", float("nan")),
        ("lr", float("inf")),
        ("r", -0.1),
        ("r", float("nan")),
    ]
    for name, value in bad:
        with pytest.raises(GatelabError, match=name if name != "r" else "KL weight"):
            VAEConfig(**{name: value}).validate()
    assert VAEConfig(r=1.0, lr=1, latent=2).validate().r == 1.0
