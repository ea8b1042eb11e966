"""The projection baseline: descent lowers the error from the starting points, recovers the generator's own images,
keeps the best restart per image, stays in [0, 1], and refuses bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gatelab.defense import BPDA, VAE18, ProjectionPurifier, project, project_restarts
from gatelab.errors import GatelabError

LATENT = 8


@pytest.fixture(scope="module")
def decoder():
    """A random VAE18 whose BatchNorm statistics are those of its own decoder on N(0, I) codes, so that in eval mode
    its images vary with z (uncalibrated, a random decoder gives nearly one image for every z)."""
    torch.manual_seed(0)
    vae = VAE18(LATENT)
    for m in vae.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # running statistics = the plain average over the calibration batch
    vae.train()
    with torch.no_grad():
        vae.decode(torch.randn(512, LATENT))
    return vae.eval()


@pytest.fixture(scope="module")
def own_images(decoder):
    """Four images the generator itself makes, G(z0)."""
    with torch.no_grad():
        return decoder.decode(torch.randn(4, LATENT, generator=torch.Generator().manual_seed(5)))


def test_error_falls_from_the_starting_points_and_with_steps(decoder, own_images):
    errors = [project_restarts(decoder, own_images, steps=s, restarts=3, seed=1)[1] for s in (0, 5, 30)]
    start, few, many = errors
    assert start.shape == (4, 3)
    assert (few < start).all() and (many < few).all()  # every image and restart improves, same starting points
    assert many.max() < 0.05 * start.min()


def test_the_generators_own_images_are_recovered(decoder, own_images):
    recovered = project(decoder, own_images, steps=60, restarts=3, seed=1)
    assert (recovered - own_images).abs().max() < 0.02
    assert (own_images - own_images.roll(1, 0)).abs().max() > 0.5  # the images differ, so this is not trivial


def test_best_of_restarts_is_the_minimum_per_image(decoder):
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    recs, errors = project_restarts(decoder, x, steps=3, restarts=4, seed=3, batch_size=2)
    best = project(decoder, x, steps=3, restarts=4, seed=3, batch_size=2)
    pick = errors.argmin(dim=1)
    assert len(set(pick.tolist())) > 1  # different restarts win for different images
    torch.testing.assert_close(best, recs[torch.arange(5), pick])
    torch.testing.assert_close((best - x).pow(2).mean(dim=(1, 2, 3)), errors.min(dim=1).values)


def test_shapes_range_inputs_and_purifier(decoder, own_images):
    purifier = ProjectionPurifier(decoder, steps=2, restarts=2, seed=1)
    out = purifier.purify(own_images)
    assert out.shape == (4, 1, 28, 28) and out.dtype == torch.float32
    assert ((out >= 0) & (out <= 1)).all()
    torch.testing.assert_close(out, project(decoder, own_images, steps=2, restarts=2, seed=1))
    as_uint8 = (own_images * 255).round().to(torch.uint8)
    torch.testing.assert_close(purifier.purify(as_uint8.numpy()), purifier.purify(as_uint8))
    assert decoder.training is False and not any(p.grad is not None for p in decoder.parameters())


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"steps": -1}, "steps"),
        ({"steps": 1.5}, "steps"),
        ({"restarts": 0}, "restarts"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_bad_settings_are_refused(decoder, own_images, kw, message):
    with pytest.raises(GatelabError, match=message):
        project(decoder, own_images, **kw)
    with pytest.raises(GatelabError, match=message):
        ProjectionPurifier(decoder, **kw)


def test_bad_images_and_generators_are_refused(decoder):
    for x in (torch.rand(2, 28, 28), torch.rand(2, 1, 28, 28) + 1, torch.zeros(0, 1, 28, 28), np.zeros((2, 3, 28, 28))):
        with pytest.raises(GatelabError, match="images"):
            project(decoder, x, steps=1, restarts=1)
    with pytest.raises(GatelabError, match="generator"):
        project(nn.Linear(8, 784), torch.rand(1, 1, 28, 28))


def test_bpda_passes_the_classifier_gradient_at_the_purified_point_straight_through(decoder, own_images):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    purifier = ProjectionPurifier(decoder, steps=3, restarts=2, seed=1)
    y = torch.tensor([0, 1, 2, 3])
    x = own_images.clone().requires_grad_(True)
    logits = BPDA(net, purifier)(x)
    purified = purifier.purify(own_images).requires_grad_(True)
    assert torch.equal(logits, net(purified))  # forward: the classifier on the projection
    (through,) = torch.autograd.grad(F.cross_entropy(logits, y), x)
    (expected,) = torch.autograd.grad(F.cross_entropy(net(purified), y), purified)
    assert torch.equal(through, expected) and through.abs().sum() > 0  # backward: the projection as the identity
    with pytest.raises(GatelabError, match="purify"):
        BPDA(net, lambda x: x)  # a function, not a purifier
