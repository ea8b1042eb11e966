"""The estimators' gradients against the exact gradient, computed by enumerating every gate state."""

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gatelab.gates import gates, l0_penalty, soft_gates, sparsify, train_step, undecided_gates
from gatelab.gates.estimators import HC_BETA, HC_GAMMA, HC_ZETA, make_estimator


def _problem(estimator, gate_function="scaled_sigmoid"):
    """A 4-input linear classifier with a gate on each input, and a fixed batch."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3))
    sparsify(model, "neuron", estimator, lam=0.0, keep_prob=0.5, gate_function=gate_function)
    with torch.no_grad():
        gates(model)[0].phi.copy_(torch.tensor([0.3, -0.2, 0.05, -0.1]))
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    return model, x, y


def _exact_gradient(model, x, y):
    """d/dphi of E_z[loss(z)] = sum over the 16 gate states of P(z) loss(z)."""
    layer = model[0]
    gate = gates(model)[0]
    weight = layer.parametrizations.weight.original.detach()
    phi = gate.phi.detach().clone().requires_grad_(True)
    p = gate.estimator.prob_open(phi)
    expectation = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=4):
        z = torch.tensor(bits)
        prob = torch.prod(torch.where(z > 0, p, 1 - p))
        loss = F.cross_entropy(F.linear(x, weight * z, layer.bias.detach()), y)
        expectation = expectation + prob * loss
    (grad,) = torch.autograd.grad(expectation, phi)
    return grad


def _monte_carlo(model, x, y, draws):
    """The gradient that train_step hands the optimiser, over many independent draws."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    phi = gates(model)[0].phi
    samples = []
    for _ in range(draws):
        train_step(model, x, y, optimizer, dataset_size=1)
        samples.append(phi.grad.detach().clone())
    samples = torch.stack(samples)
    return samples.mean(0), samples.std(0) / math.sqrt(draws)


@pytest.mark.parametrize("estimator,draws", [("arm", 3000), ("ar", 6000)])
@pytest.mark.parametrize("gate_function", ["scaled_sigmoid", "hard_sigmoid"])
def test_arm_and_ar_are_unbiased(estimator, draws, gate_function):
    model, x, y = _problem(estimator, gate_function)
    exact = _exact_gradient(model, x, y)
    mean, stderr = _monte_carlo(model, x, y, draws)
    assert torch.all((mean - exact).abs() <= 4 * stderr + 1e-7), (mean, exact, stderr)
    assert exact.abs().max() > 1e-3  # the check is not vacuous


def test_straight_through_is_biased_reference():
    """Straight-through runs and gives a gradient, but not the exact one (it is the biased reference)."""
    model, x, y = _problem("straight_through")
    exact = _exact_gradient(model, x, y)
    mean, stderr = _monte_carlo(model, x, y, 3000)
    assert torch.isfinite(mean).all()
    assert torch.any((mean - exact).abs() > 4 * stderr)


def test_arm_has_lower_variance_than_ar():
    model, x, y = _problem("arm")
    _, se_arm = _monte_carlo(model, x, y, 1000)
    model, x, y = _problem("ar")
    _, se_ar = _monte_carlo(model, x, y, 1000)
    assert se_arm.mean() < se_ar.mean()


def test_hard_concrete_samples_and_point_masses():
    est = make_estimator("hard_concrete")
    log_alpha = torch.tensor([-1.0, 0.0, 1.5])
    u = torch.rand(200_000, 3)
    z = est.sample(log_alpha.expand_as(u), u)
    assert z.min() >= 0 and z.max() <= 1
    # P(z = 0) = sigmoid(beta log(-gamma/zeta) - log alpha);
    # P(z = 1) = 1 - sigmoid(beta log((1-gamma)/(zeta-1)) - log alpha)
    p0 = torch.sigmoid(HC_BETA * math.log(-HC_GAMMA / HC_ZETA) - log_alpha)
    p1 = 1 - torch.sigmoid(HC_BETA * math.log((1 - HC_GAMMA) / (HC_ZETA - 1)) - log_alpha)
    assert torch.allclose((z == 0).float().mean(0), p0, atol=0.005)
    assert torch.allclose((z == 1).float().mean(0), p1, atol=0.005)
    assert torch.allclose(est.prob_open(log_alpha), 1 - p0)
    assert ((z > 0) & (z < 1)).any()


def test_l0_penalty_is_sum_of_open_probabilities():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2))
    sparsify(model, "neuron", "arm", keep_prob=0.7, k=3.0)
    expected = sum(torch.sigmoid(3.0 * g.phi).sum() for g in gates(model))
    assert torch.allclose(l0_penalty(model), expected)
    assert abs(float(l0_penalty(model).detach()) - 0.7 * 17) < 0.5


def test_deterministic_gate_rule():
    est = make_estimator("arm")
    phi = torch.tensor([-0.2, 0.0, 0.3])
    p = torch.sigmoid(7 * phi)
    assert torch.equal(est.deterministic(phi), torch.where(p >= 0.5, p, torch.zeros(3)))


def _bn_model():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    return sparsify(model, "structured", "arm", keep_prob=0.5)


def test_arm_second_pass_leaves_batchnorm_statistics_alone():
    """After one ARM step the running statistics are those of one plain forward pass on the same gates."""
    model = _bn_model()
    plain = copy.deepcopy(model)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    rng = torch.get_rng_state()
    train_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.0), dataset_size=8)
    torch.set_rng_state(rng)
    plain.train()(x)  # draws the same gates (the train step's first draw) and updates the statistics once
    bn, ref = model[1], plain[1]
    assert int(bn.num_batches_tracked) == 1
    assert not torch.equal(bn.running_mean, torch.zeros(4))  # the check is not vacuous
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(bn, name), getattr(ref, name)), name


def test_arm_passes_see_the_same_dropout_masks():
    torch.manual_seed(4)
    model = sparsify(nn.Sequential(nn.Dropout(0.5), nn.Linear(20, 3)), "neuron", "arm")
    masks = []
    model[0].register_forward_hook(lambda module, inputs, output: masks.append(output != 0))
    x, y = torch.randn(16, 20), torch.randint(0, 3, (16,))
    train_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.1), dataset_size=16)
    assert len(masks) == 2 and 0.2 < masks[0].float().mean() < 0.8
    assert torch.equal(masks[0], masks[1])
    train_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.1), dataset_size=16)
    assert not torch.equal(masks[2], masks[0])  # the next step draws new masks


def test_train_step_returns_device_tensors_without_syncing():
    model, x, y = _problem("arm")
    out = train_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.1), dataset_size=6)
    for key in ("loss", "data_loss", "regularizer"):
        assert torch.is_tensor(out[key]) and out[key].dim() == 0 and not out[key].requires_grad, key
    assert torch.equal(out["loss"], out["data_loss"] + out["regularizer"])
    assert out["outputs"].shape == (6, 3)


def test_soft_gates_use_the_expected_gate_and_undecided_gates_are_counted():
    torch.manual_seed(0)
    model = sparsify(nn.Sequential(nn.Linear(4, 3)), "neuron", "arm", k=7.0)
    gate = gates(model)[0]
    with torch.no_grad():
        gate.phi.copy_(torch.tensor([-1.0, -0.1, 0.05, 1.0]))  # P(open) 0.0009, 0.33, 0.59, 0.999
    p = torch.sigmoid(7 * gate.phi.detach())
    x = torch.rand(5, 4)
    layer = model[0].parametrizations.weight.original, model[0].bias
    model.eval()
    with torch.no_grad():
        with soft_gates(model):
            torch.testing.assert_close(model(x), (x * p) @ layer[0].T + layer[1])
        torch.testing.assert_close(model(x), (x * torch.where(p >= 0.5, p, 0)) @ layer[0].T + layer[1])
    assert int(undecided_gates(model)) == 2  # the two between 0.1 and 0.9
    assert int(undecided_gates(model, 0.0005, 0.9995)) == 4
    hc = make_estimator("hard_concrete")  # its mean has no closed form: Louizos et al.'s test-time estimate
    phi = torch.tensor([-3.0, 0.0, 2.0])
    assert torch.equal(hc.expected(phi), hc.deterministic(phi))
