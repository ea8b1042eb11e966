"""Explanation metrics: Captum baselines, deletion/insertion curves, keep-top accuracy, comparison."""

import numpy as np
import pytest
import torch
from torch import nn

from gatelab.data.mnist import mnist_tensors
from gatelab.errors import GatelabError
from gatelab.nice.metrics import (
    BASELINES,
    CurveResult,
    attribute,
    blur,
    compare,
    deletion_insertion,
    keep_top_accuracy,
    plot_curves,
    reference_images,
)


def _probability(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Target-class softmax probability, computed here independently of the library."""
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)[torch.arange(len(targets)), targets]


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained for 200 steps on 12,800 MNIST images, 200 test images to explain, its accuracy."""
    torch.manual_seed(0)
    x, y = mnist_tensors("mnist", "train")
    xt, yt = mnist_tensors("mnist", "test")
    net = nn.Sequential(
        nn.Conv2d(1, 8, 5, stride=2),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:12_800]
    for start in range(0, len(order), 64):
        batch = order[start : start + 64]
        loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(xt[:2000]).argmax(1) == yt[:2000]).float().mean().item()
    return net, xt[:200], yt[:200], accuracy


def _linear(channels: int = 3, h: int = 5, w: int = 4, classes: int = 4):
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * h * w, classes))


def test_classifier_reaches_accuracy_floor(trained):
    assert trained[3] > 0.90


@pytest.mark.parametrize("method", list(BASELINES))
def test_baselines_have_the_right_shape_and_are_informative(trained, method):
    net, x, y, _ = trained
    net.train()  # attribute puts it in eval mode and restores the flag
    a = attribute(net, x[:16], y[:16], method, batch_size=7, n_steps=8)
    assert net.training
    net.eval()
    assert a.shape == (16, 1, 28, 28)
    assert torch.isfinite(a).all()
    assert (a.flatten(1).abs().sum(1) > 0).all()  # every image gets a non-zero map
    if method == "saliency":
        assert (a >= 0).all()


def test_saliency_of_a_linear_model_is_the_absolute_weight_row():
    model = _linear()
    x = torch.rand(6, 3, 5, 4)
    targets = torch.tensor([0, 1, 2, 3, 1, 0])
    a = attribute(model, x, targets, "saliency")
    weight = model[1].weight.detach().view(4, 3, 5, 4)
    expected = weight[targets].abs().sum(dim=1, keepdim=True)
    assert torch.equal(a, expected)


def test_integrated_gradients_and_occlusion_of_a_linear_model_are_input_times_weight():
    model = _linear()
    x = torch.rand(6, 3, 5, 4)
    targets = torch.tensor([3, 2, 1, 0, 0, 2])
    weight = model[1].weight.detach().view(4, 3, 5, 4)
    expected = (x * weight[targets]).sum(dim=1, keepdim=True)  # signed, summed over channels
    ig = attribute(model, x, targets, "integrated_gradients", n_steps=10, internal_batch_size=7)
    torch.testing.assert_close(ig, expected, rtol=1e-4, atol=1e-5)
    occ = attribute(model, x, targets, "occlusion", window=1, stride=1)
    torch.testing.assert_close(occ, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(attribute(model, x, targets, "occlusion", window=1, stride=1, absolute=True), occ.abs())


def test_curves_start_and_end_at_the_image_and_the_reference(trained):
    net, x, y, _ = trained
    x, y = x[:20], y[:20]
    sal = attribute(net, x, y, "saliency")
    r = deletion_insertion(net, x, y, sal, steps=10, batch_size=16)  # 784 / 10 is not whole
    assert isinstance(r, CurveResult)
    expected_counts = np.round(np.arange(11) * 784 / 10)
    np.testing.assert_allclose(r.fractions.numpy(), expected_counts / 784, rtol=0, atol=1e-7)
    assert r.deletion.shape == r.insertion.shape == (20, 11)
    p_image = _probability(net, x, y)
    p_black = _probability(net, torch.zeros_like(x), y)
    torch.testing.assert_close(r.deletion[:, 0], p_image, rtol=0, atol=1e-6)
    torch.testing.assert_close(r.deletion[:, -1], p_black, rtol=0, atol=1e-6)
    torch.testing.assert_close(r.insertion[:, 0], p_black, rtol=0, atol=1e-6)
    torch.testing.assert_close(r.insertion[:, -1], p_image, rtol=0, atol=1e-6)
    # AUCs: the trapezoid rule over the fractions, per image and on average
    f = r.fractions.double().numpy()

    def trapezoid(c):
        c = c.double().numpy()
        return ((c[:, 1:] + c[:, :-1]) / 2 * np.diff(f)).sum(axis=1)

    np.testing.assert_allclose(r.deletion_aucs.numpy(), trapezoid(r.deletion), rtol=1e-5)
    assert r.insertion_auc == pytest.approx(trapezoid(r.insertion).mean(), rel=1e-5)
    assert r.summary() == {"deletion_auc": r.deletion_auc, "insertion_auc": r.insertion_auc}


def test_tensor_and_blur_references(trained):
    net, x, y, _ = trained
    x, y = x[:12], y[:12]
    sal = torch.rand(12, 28, 28)  # (N, H, W) is accepted too
    gray = torch.full((1, 28, 28), 0.5)
    r = deletion_insertion(net, x, y, sal, steps=4, reference=gray, insertion_reference="blur", blur_sigma=2.0)
    torch.testing.assert_close(r.deletion[:, -1], _probability(net, torch.full_like(x, 0.5), y), rtol=0, atol=1e-6)
    torch.testing.assert_close(r.insertion[:, 0], _probability(net, blur(x, 2.0), y), rtol=0, atol=1e-6)
    torch.testing.assert_close(r.insertion[:, -1], _probability(net, x, y), rtol=0, atol=1e-6)


def test_reference_images_are_what_removed_pixels_take():
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(reference_images("zeros", x), torch.zeros_like(x))
    torch.testing.assert_close(reference_images("blur", x), blur(x, 5.0))
    torch.testing.assert_close(reference_images("blur", x, 2.0), blur(x, 2.0))
    torch.testing.assert_close(reference_images(0.25, x), torch.full_like(x, 0.25))
    image = torch.rand(1, 8, 8)
    torch.testing.assert_close(reference_images(image, x), image.expand_as(x))


def test_blur_keeps_constants_and_mass_and_smooths():
    const = torch.full((2, 3, 9, 11), 0.3)
    torch.testing.assert_close(blur(const, 2.0), const)
    x = torch.zeros(1, 1, 31, 31)
    x[0, 0, 15, 15] = 1.0  # far from the border, so no mass is lost
    b = blur(x, 2.0)
    assert b.sum().item() == pytest.approx(1.0, rel=1e-5)
    assert b.max().item() < 0.05 and b[0, 0, 15, 15] == b.max()
    torch.testing.assert_close(b, b.flip(-1).flip(-2))  # symmetric kernel


def test_constant_saliency_removes_pixels_in_raster_order(trained):
    net, x, y, _ = trained
    x, y = x[:10], y[:10]
    flat = torch.ones(10, 1, 28, 28)
    r1 = deletion_insertion(net, x, y, flat, steps=7)  # 112 pixels a step
    r2 = deletion_insertion(net, x, y, flat.clone(), steps=7)
    assert torch.equal(r1.deletion, r2.deletion) and torch.equal(r1.insertion, r2.insertion)
    r3 = deletion_insertion(net, x, y, flat, steps=7, batch_size=4)  # other batches: same up to rounding
    torch.testing.assert_close(r3.deletion, r1.deletion, rtol=0, atol=1e-6)
    first = torch.zeros(784, dtype=torch.bool)
    first[: 3 * 112] = True
    first = first.view(1, 1, 28, 28)
    deleted = torch.where(first, torch.zeros_like(x), x)
    inserted = torch.where(first, x, torch.zeros_like(x))
    torch.testing.assert_close(r1.deletion[:, 3], _probability(net, deleted, y), rtol=0, atol=1e-6)
    torch.testing.assert_close(r1.insertion[:, 3], _probability(net, inserted, y), rtol=0, atol=1e-6)


def test_binary_mask_is_a_saliency_map(trained):
    net, x, y, _ = trained
    x, y = x[:10], y[:10]
    mask = torch.zeros(10, 1, 28, 28, dtype=torch.bool)
    mask[..., 12:16, :] = True  # 4 rows through the digits: 112 pixels, one step when steps = 7
    r = deletion_insertion(net, x, y, mask, steps=7)
    kept_out = torch.where(mask, torch.zeros_like(x), x)
    torch.testing.assert_close(r.deletion[:, 1], _probability(net, kept_out, y), rtol=0, atol=1e-6)
    # the mask's pixels go first, so the first step hurts more than deleting the top 4 rows
    assert r.deletion[:, 1].mean() < deletion_insertion(net, x, y, ~mask, steps=7).deletion[:, 1].mean()


def test_dropout_is_off_during_evaluation_and_the_mode_is_restored():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(20, 3))
    model.train()
    x, y = torch.rand(8, 1, 4, 5), torch.randint(0, 3, (8,))
    sal = torch.rand(8, 1, 4, 5)
    a = deletion_insertion(model, x, y, sal, steps=5)
    b = deletion_insertion(model, x, y, sal, steps=5)
    assert torch.equal(a.deletion, b.deletion)
    assert model.training and model[1].training
    model.eval()
    torch.testing.assert_close(a.deletion[:, 0], _probability(model, x, y), rtol=0, atol=1e-6)


def test_keep_top_accuracy_at_the_extremes(trained):
    net, x, y, _ = trained
    sal = torch.rand(200, 1, 28, 28)
    acc = keep_top_accuracy(net, x, y, sal, fractions=(0.0, 1.0), batch_size=64)
    with torch.no_grad():
        full = (net(x).argmax(1) == y).sum().item() / len(y)
        black = (net(torch.zeros_like(x)).argmax(1) == y).sum().item() / len(y)
    assert acc == {0.0: pytest.approx(black, abs=1e-12), 1.0: pytest.approx(full, abs=1e-12)}


def test_explanations_beat_the_random_control(trained, tmp_path):
    net, x, y, _ = trained
    res = compare(
        net, x[:100], y[:100], methods=list(BASELINES), steps=10, fractions=(0.1,), attribute_kw={"n_steps": 8}, seed=3
    )
    assert set(res) == {*BASELINES, "random"}
    rnd = res["random"]
    for method in BASELINES:
        assert res[method]["deletion_auc"] < rnd["deletion_auc"] - 0.15, method
        assert res[method]["insertion_auc"] > rnd["insertion_auc"] + 0.05, method
        assert res[method]["keep_top"][0.1] > rnd["keep_top"][0.1] + 0.1, method
        assert res[method]["seconds"] >= 0
    path = plot_curves(res, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left behind


def test_compare_takes_given_maps_and_seeds_the_random_control():
    model = _linear(1, 6, 6, 3)
    x, y = torch.rand(10, 1, 6, 6), torch.randint(0, 3, (10,))
    given = {"nice": torch.rand(10, 1, 6, 6)}
    a = compare(model, x, y, given, steps=6, seed=5)
    b = compare(model, x, y, given, steps=6, seed=5)
    c = compare(model, x, y, given, steps=6, seed=6)
    assert set(a) == {"nice", "random"} and a["nice"]["seconds"] is None
    assert a["random"]["deletion_auc"] == b["random"]["deletion_auc"]
    assert a["random"]["deletion_auc"] != c["random"]["deletion_auc"]
    assert a["nice"]["deletion_auc"] == c["nice"]["deletion_auc"]
    assert set(compare(model, x, y, given, random_control=False, steps=6)) == {"nice"}


def test_bad_inputs_raise_clear_errors(tmp_path):
    model = _linear(1, 6, 6, 3)
    x, y = torch.rand(4, 1, 6, 6), torch.tensor([0, 1, 2, 0])
    sal = torch.rand(4, 1, 6, 6)
    with pytest.raises(GatelabError, match="accepted: saliency, integrated_gradients, occlusion"):
        attribute(model, x, y, "lime")
    with pytest.raises(GatelabError, match=r"saliency must have shape \(4, 1, 6, 6\)"):
        deletion_insertion(model, x, y, torch.rand(4, 1, 3, 3))
    with pytest.raises(GatelabError, match="saliency must have shape"):
        keep_top_accuracy(model, x, y, torch.rand(3, 6, 6))
    with pytest.raises(GatelabError, match=r"targets must have shape \(4,\)"):
        deletion_insertion(model, x, y[:3], sal)
    with pytest.raises(GatelabError, match="targets must have shape"):
        attribute(model, x, y[:3], "saliency")
    with pytest.raises(GatelabError, match="integer class indices"):
        attribute(model, x, y.float(), "saliency")
    with pytest.raises(GatelabError, match=r"class indices in \[0, 3\)"):
        deletion_insertion(model, x, torch.tensor([0, 1, 2, 3]), sal)
    with pytest.raises(GatelabError, match=r"images must have shape \(N, C, H, W\)"):
        attribute(model, x[:, 0], y, "saliency")
    with pytest.raises(GatelabError, match="NaN"):
        deletion_insertion(model, x, y, torch.full_like(sal, float("nan")))
    with pytest.raises(GatelabError, match="accepted: zeros, blur"):
        deletion_insertion(model, x, y, sal, reference="noise")
    with pytest.raises(GatelabError, match="does not broadcast"):
        deletion_insertion(model, x, y, sal, reference=torch.zeros(2, 6, 6))
    with pytest.raises(GatelabError, match="steps must be"):
        deletion_insertion(model, x, y, sal, steps=0)
    with pytest.raises(GatelabError, match="fractions must be"):
        keep_top_accuracy(model, x, y, sal, fractions=(0.1, 1.5))
    with pytest.raises(GatelabError, match="window must be at most"):
        attribute(model, x, y, "occlusion", window=7)
    with pytest.raises(GatelabError, match="accepted: saliency"):
        compare(model, x, y, methods=["gradcam"])
    with pytest.raises(GatelabError, match="classifier must be a torch.nn.Module"):
        deletion_insertion(lambda t: t.flatten(1), x, y, sal)
    with pytest.raises(GatelabError, match="CurveResult"):
        plot_curves({"nice": 0.3}, tmp_path / "c.png")
    assert not any(tmp_path.iterdir())
