"""The authors' training details (leo-yangli/l0-arm): weight averaging, gated L2, gate initialisation,
one draw per gate for the whole minibatch, and both LeNet-5 lambdas."""

import math

import pytest
import torch
from torch import nn

from gatelab.errors import GatelabError
from gatelab.gates import authors_init_, build_model, expected_l2, gates, regularizer, sparsify
from gatelab.gates import train as gates_train
from gatelab.gates.average import WeightAverage
from gatelab.gates.train import PAPER_LAMBDA, README_LAMBDA, TrainConfig, build_gated, fit


def test_weight_average_is_the_bias_corrected_exponential_average():
    layer = nn.Linear(2, 1)
    average = WeightAverage(layer, decay=0.9)
    values = [torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 0.5]]), torch.tensor([[-1.0, 4.0]])]
    for v in values:
        with torch.no_grad():
            layer.weight.copy_(v)
        average.update()
    weights = [0.9**2, 0.9, 1.0]  # decay^(t - i)
    expected = sum(w * v for w, v in zip(weights, values)) / sum(weights)
    torch.testing.assert_close(average.averaged()[0], expected)
    last = layer.weight.detach().clone()
    with average.applied():
        torch.testing.assert_close(layer.weight.detach(), expected)
    assert torch.equal(layer.weight.detach(), last)  # the model's own weights come back
    last_only = WeightAverage(layer, decay=0.0)
    last_only.update()
    assert torch.equal(last_only.averaged()[0], last)


def test_fit_evaluates_and_returns_the_averaged_weights(monkeypatch):
    seen, decays = [], []
    real_step = gates_train.train_step

    def step(model, *args, **kwargs):
        out = real_step(model, *args, **kwargs)
        seen.append([p.detach().clone() for p in model.parameters()])
        decays.append(kwargs["weight_decay"])
        return out

    monkeypatch.setattr(gates_train, "train_step", step)
    config = TrainConfig(model="mlp", epochs=1, train_examples=96, val_size=50, batch_size=32, ema=0.8)
    model, _ = fit(config, quiet=True)
    assert len(seen) == 3 and decays == [5e-4] * 3  # the MLP's authors' gated weight decay
    weights = [0.8**2, 0.8, 1.0]
    for i, p in enumerate(model.parameters()):
        expected = sum(w * s[i] for w, s in zip(weights, seen)) / sum(weights)
        torch.testing.assert_close(p.detach(), expected)


def test_expected_l2_weights_each_unit_by_its_gate():
    model = sparsify(build_model("lenet5"), "structured", "arm", keep_prob=0.5)
    with torch.no_grad():
        for g in gates(model):
            g.phi.uniform_(-0.3, 0.3)
    want = torch.zeros(())
    for name in ("conv1", "conv2"):
        layer = getattr(model, name)
        w, b = layer.parametrizations.weight.original, layer.parametrizations.bias.original
        p = layer.parametrizations.weight[0].gate.prob_open()
        want = want + (p * (w.square().sum((1, 2, 3)) + b.square())).sum()  # output channels
    for name in ("fc1", "fc2"):
        layer = getattr(model, name)
        w = layer.parametrizations.weight.original
        p = layer.parametrizations.weight[0].gate.prob_open()
        want = want + (p * w.square().sum(0)).sum() + layer.bias.square().sum()  # input neurons; bias ungated
    torch.testing.assert_close(expected_l2(model), want)
    n, wd = 60000, 5e-4
    l0 = sum(g.lam / n * g.group_size * g.prob_open().sum() for g in gates(model))
    torch.testing.assert_close(regularizer(model, n, weight_decay=wd), l0 + 0.5 * wd * want)
    phi = gates(model)[0].phi
    (grad,) = torch.autograd.grad(expected_l2(model), phi)
    assert (grad != 0).all()  # the gates feel the weight decay of the units they keep


@pytest.mark.parametrize(
    "estimator,k,layer,keep,mean,std",
    [
        ("arm", 7.0, "fc1", 0.8, math.log(4) / 7, 0.01 / 7),  # the MLP's first layer: drop rate 0.2
        ("arm", 7.0, "fc2", 0.5, 0.0, 0.01 / 7),
        ("ar", 2.0, "fc1", 0.8, math.log(4) / 2, 0.01 / 2),
        ("hard_concrete", 7.0, "fc1", 0.8, math.log(4), 0.01),  # log alpha, as Louizos et al.
    ],
)
def test_gate_initialisation_follows_the_authors(estimator, k, layer, keep, mean, std):
    model = build_gated(TrainConfig(model="mlp", estimator=estimator, k=k))
    (phi,) = [g.phi.detach() for g in gates(model) if g.layer == layer]
    assert gates_train.PAPER_KEEP_PROB["mlp"][layer] == keep
    assert abs(phi.mean().item() - mean) < 4 * std / math.sqrt(phi.numel())
    assert abs(phi.std().item() / std - 1) < 0.15


@pytest.mark.parametrize("model", ["mlp", "lenet5"])
def test_authors_weight_init_is_he_normal_on_their_layouts_with_zero_biases(model):
    torch.manual_seed(0)
    layers = [m for m in authors_init_(build_model(model)).modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(layers) == (3 if model == "mlp" else 4)
    for layer in layers:
        w = layer.weight.detach()
        # their Linear stores (in, out) and their convolution (out, in, kh, kw); both use fan_out
        fan = w.shape[1] if isinstance(layer, nn.Linear) else w.shape[0] * w.shape[2] * w.shape[3]
        assert abs(w.mean().item()) < 4 * math.sqrt(2 / fan) / math.sqrt(w.numel())
        assert abs(w.std().item() / math.sqrt(2 / fan) - 1) < 0.2
        assert torch.count_nonzero(layer.bias) == 0
    # the training config selects it; PyTorch's init stays the default
    kinds = (nn.Linear, nn.Conv2d)
    biases = {
        init: [
            m.bias for m in build_gated(TrainConfig(model=model, weight_init=init)).modules() if isinstance(m, kinds)
        ]
        for init in ("authors", "torch")
    }
    assert all(torch.count_nonzero(b) == 0 for b in biases["authors"])
    assert all(torch.count_nonzero(b) > 0 for b in biases["torch"])
    with pytest.raises(GatelabError, match="weight_init.*authors"):
        TrainConfig(model=model, weight_init="he").validate()


def test_one_uniform_draw_per_gate_serves_the_whole_minibatch():
    model = sparsify(build_model("lenet5"), "structured", "arm", keep_prob=0.5).train()
    assert [tuple(g.u.shape) for g in gates(model)] == [(20,), (50,), (800,), (500,)]  # one number per gate
    x = torch.rand(1, 1, 28, 28).expand(16, 1, 28, 28)  # the same image 16 times
    with torch.no_grad():
        first, second = model(x), model(x)  # each training forward draws new gates
    assert torch.equal(first, first[:1].expand_as(first))  # every example saw the same gates
    assert not torch.equal(first, second)


def test_both_lenet5_lambdas_are_selectable():
    default = {g.layer: g.lam for g in gates(build_gated(TrainConfig(model="lenet5")))}
    assert default == PAPER_LAMBDA["lenet5"] == {"conv1": 10.0, "conv2": 0.5, "fc1": 0.1, "fc2": 10.0}
    readme = TrainConfig(model="lenet5", lam=list(README_LAMBDA["lenet5"].values()))
    assert {g.layer: g.lam for g in gates(build_gated(readme))} == {n: 0.1 for n in default}
