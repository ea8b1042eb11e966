"""The compact pass computes only open units: it must give the dense pass's outputs and gradients exactly."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gatelab.gates import gates, sparsify, train_step
from gatelab.gates.compact import compact_forward, compactable
from gatelab.gates.models import build_model


def _pooled_convs():
    """Padded, strided convolutions and global pooling: the gated channels reach a Linear as 1x1 features."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 8, 3, stride=2),
        nn.LeakyReLU(0.1),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def _sigmoid_mlp():
    """Linears joined by Tanh and Sigmoid: outputs that the next gate closes are skipped through them."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 40), nn.Tanh(), nn.Linear(40, 30), nn.Sigmoid(), nn.Linear(30, 10)
    )


def _gated(build, estimator, seed=0):
    torch.manual_seed(seed)
    model = sparsify(build(), "structured", estimator, lam=0.1, keep_prob=0.5).train()
    with torch.no_grad():
        for g in gates(model):  # about a third firmly closed, a third firmly open, the rest undecided
            phi = torch.randn(g.phi.shape) * 3
            g.phi.copy_(phi / (1 if estimator == "hard_concrete" else g.estimator.g.k))
            g.resample_()
    return model


def _grads(model, out):
    loss = F.cross_entropy(out, torch.arange(len(out)) % 10) * 10
    model.zero_grad(set_to_none=False)
    loss.backward()
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("estimator", ["arm", "hard_concrete"])
@pytest.mark.parametrize(
    "build", [lambda: build_model("lenet5"), lambda: build_model("mlp"), _pooled_convs, _sigmoid_mlp]
)
def test_the_compact_pass_gives_the_dense_outputs_and_gradients(build, estimator):
    model = _gated(build, estimator)
    assert compactable(model)
    x = torch.randn(16, 1, 28, 28)
    for antithetic in (False, True):
        for g in gates(model):
            g.antithetic = antithetic
        dense = model(x)
        want = _grads(model, dense)
        model._gatelab_steering = True  # keep the forward hook from drawing new gates for the dense call
        compact = compact_forward(model, x)
        got = _grads(model, compact)
        torch.testing.assert_close(compact, dense, atol=1e-5, rtol=1e-4)
        assert want.keys() == got.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-4, msg=name)
        model._gatelab_steering = False
    assert any(bool((g().detach() == 0).any()) for g in gates(model))  # the pass did skip units


def test_training_steps_with_and_without_skipping_closed_units_agree():
    torch.manual_seed(1)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    models = [_gated(lambda: build_model("lenet5"), "arm", seed=3) for _ in range(2)]
    for m in models:  # (Adam would blow rounding-level gradients up to steps of size lr)
        m.opt = torch.optim.SGD(m.parameters(), 0.05, momentum=0.9)
    for step in range(5):
        outs = []
        for m, skip in zip(models, (True, False)):
            torch.manual_seed(step)
            outs.append(train_step(m, x, y, m.opt, dataset_size=1000, weight_decay=5e-4, skip_closed=skip))
        torch.testing.assert_close(outs[0]["loss"], outs[1]["loss"], atol=1e-5, rtol=1e-5)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_a_layer_with_every_gate_closed_falls_back_to_the_dense_pass():
    model = _gated(lambda: build_model("mlp"), "arm")
    with torch.no_grad():
        gates(model)[1].phi.fill_(-5.0)
    assert compact_forward(model, torch.randn(4, 1, 28, 28)) is None
    dense = copy.deepcopy(model)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    opts = [torch.optim.SGD(m.parameters(), 0.1) for m in (model, dense)]
    torch.manual_seed(0)
    a = train_step(model, x, y, opts[0], dataset_size=100)["loss"]
    torch.manual_seed(0)
    b = train_step(dense, x, y, opts[1], dataset_size=100, skip_closed=False)["loss"]
    torch.testing.assert_close(a, b)


def test_models_the_compact_pass_cannot_run_are_told_apart():
    assert not compactable(sparsify(build_model("resnet"), "structured", "arm"))  # residual, BatchNorm
    assert not compactable(sparsify(build_model("mlp"), "weight", "arm"))  # gates on single weights
    dropout = nn.Sequential(nn.Flatten(), nn.Linear(784, 20), nn.Dropout(0.5), nn.Linear(20, 10))
    assert not compactable(sparsify(dropout, "neuron", "arm"))  # its draws would differ between passes
    norm = nn.Sequential(nn.Flatten(), nn.Linear(784, 20), nn.BatchNorm1d(20), nn.Linear(20, 10))
    assert not compactable(sparsify(norm, "neuron", "arm"))


def test_the_convolutions_and_products_see_only_the_open_units(monkeypatch):
    model = _gated(lambda: build_model("lenet5"), "arm")
    opened = [int(g().count_nonzero()) for g in gates(model)]  # conv1, conv2 channels; fc1, fc2 inputs
    shapes = []
    real_conv, real_linear = F.conv2d, F.linear
    monkeypatch.setattr(F, "conv2d", lambda x, w, *a: shapes.append(tuple(w.shape)) or real_conv(x, w, *a))
    monkeypatch.setattr(F, "linear", lambda x, w, b: shapes.append(tuple(w.shape)) or real_linear(x, w, b))
    compact_forward(model, torch.randn(2, 1, 28, 28))
    c1, c2, f1, f2 = opened
    assert shapes[0] == (c1, 1, 5, 5) and shapes[1] == (c2, c1, 5, 5)
    assert shapes[2][0] == f2 and shapes[2][1] <= min(f1, 16 * c2) and shapes[3] == (10, f2)
