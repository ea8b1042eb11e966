"""The claims of Neural Plasticity Networks, checked at small sizes."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gatelab.npn.plasticity as plasticity
from gatelab.data.synthetic import two_moons
from gatelab.errors import GatelabError
from gatelab.gates import gates, lenet5_caffe, mlp, train_step
from gatelab.npn import K_HARD, SYMMETRIC_LOGITS, KSchedule, active_units, make_plastic, set_k, train_plastic
from gatelab.npn.plasticity import _grow
from gatelab.npn.train import AUTHORS_STARTS


def test_k_zero_is_dropout_with_rate_one_half():
    layer = nn.Sequential(nn.Linear(6, 4))
    make_plastic(layer, init_active=0.5, k=0.0)
    gate = gates(layer)[0]
    assert (gate.phi > 0).sum() == 3  # phi differs between units, yet at k = 0 it does not matter
    x = torch.randn(5, 6)
    layer.train()
    draws = torch.stack([layer(x) for _ in range(6000)])
    freq = torch.stack([(gate() > 0).float() for _ in range(2000) if gate.resample_() is None]).mean(0)
    assert torch.allclose(freq, torch.full((6,), 0.5), atol=0.05)
    dense = nn.Linear(6, 4)
    dense.weight.data.copy_(layer[0].parametrizations.weight.original)
    dense.bias.data.copy_(layer[0].bias)
    dropout = nn.Dropout(0.5).train()
    dropped = torch.stack([dense(dropout(x)) for _ in range(6000)])
    # nn.Dropout rescales by 1/(1-p) in training; gates do not, so E[gated] - b = (1-p) (E[dropout] - b)
    torch.testing.assert_close(draws.mean(0) - dense.bias, 0.5 * (dropped.mean(0) - dense.bias), atol=0.06, rtol=0)
    layer.eval()  # the deterministic gate g(phi) = 1/2 is dropout's test-time scaling
    torch.testing.assert_close(layer(x), F.linear(0.5 * x, dense.weight, dense.bias))


def test_large_k_is_ordinary_training():
    torch.manual_seed(3)
    plain = mlp(20, (16, 12), 3)
    gated = make_plastic(copy.deepcopy(plain), init_active=1.0, k=7.0)
    set_k(gated, K_HARD)
    opt_plain = torch.optim.SGD(plain.parameters(), lr=0.1)
    opt_gated = torch.optim.SGD(gated.parameters(), lr=0.1)
    phi_before = [g.phi.detach().clone() for g in gates(gated)]
    for _ in range(25):
        x, y = torch.randn(32, 20), torch.randint(0, 3, (32,))
        opt_plain.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        opt_plain.step()
        train_step(gated, x, y, opt_gated, dataset_size=1000)
    x = torch.randn(50, 20)
    torch.testing.assert_close(gated.eval()(x), plain.eval()(x), rtol=1e-5, atol=1e-6)
    for before, g in zip(phi_before, gates(gated)):
        assert torch.equal(before, g.phi.detach())  # deterministic gates: no gradient reaches phi


def test_decided_gates_take_one_pass_and_the_same_step_as_arms_two():
    """At k = 5000 every gate is decided, so ARM's second pass would draw the same gates: skipping it (as
    train_plastic does in the ordinary and hardening stages) leaves every step bit for bit the same."""
    torch.manual_seed(4)
    one = make_plastic(mlp(20, (16, 12), 3), init_active=0.5, k=7.0)
    set_k(one, K_HARD)
    two = copy.deepcopy(one)
    passes = {id(one): 0, id(two): 0}
    for model in (one, two):
        model.register_forward_hook(lambda m, i, o: passes.__setitem__(id(m), passes[id(m)] + 1))
    opt_one, opt_two = torch.optim.Adam(one.parameters(), 1e-2), torch.optim.Adam(two.parameters(), 1e-2)
    for _ in range(5):  # dense passes (skip_closed=False), so that the model's forward hook counts them
        x, y = torch.randn(32, 20), torch.randint(0, 3, (32,))
        train_step(one, x, y, opt_one, dataset_size=1000, antithetic=False, skip_closed=False)
        train_step(two, x, y, opt_two, dataset_size=1000, skip_closed=False)
    assert passes == {id(one): 5, id(two): 10}
    for a, b in zip(one.state_dict().values(), two.state_dict().values()):
        assert torch.equal(a, b)


def test_train_plastic_takes_arms_second_pass_only_while_gates_are_undecided(monkeypatch):
    x, y = two_moons(300, noise=0.15, seed=0)
    model = make_plastic(mlp(2, (20, 16), 2), init_active=1.0, k=7.0, layers=["fc2", "fc3"])
    seen, real = [], plasticity.train_step

    def step(*args, **kw):
        seen.append(kw.get("antithetic", True))
        return real(*args, **kw)

    monkeypatch.setattr(plasticity, "train_step", step)
    schedule = KSchedule(k=7.0, plastic_from=2, harden_from=3)
    train_plastic(model, (x[:200], y[:200]), (x[200:], y[200:]), 3, schedule, batch_size=100, harden=True, quiet=True)
    assert seen == [False, False, True, True, False, False]  # ordinary, plastic, hardened: 2 steps each


def _moons_run(x, y, epochs=60, init_active=(3 / 100, 3 / 80)):
    """A 3-3 start (or another), 10 ordinary epochs, plasticity with the expansion step, hardening from 50."""
    model = make_plastic(
        mlp(2, (100, 80), 2),
        init_active=list(init_active),
        k=7.0,
        lam=[0.05, 2.0],
        layers=["fc2", "fc3"],
        logits=SYMMETRIC_LOGITS,
    )
    schedule = KSchedule(k=7.0, plastic_from=10, harden_from=50)
    log = train_plastic(
        model,
        (x[:400], y[:400]),
        (x[400:], y[400:]),
        epochs,
        schedule,
        lr=1e-2,
        batch_size=32,
        expand_fill=0.1,
        harden=True,
        quiet=True,
    )
    return model, log


def test_expansion_grows_where_the_task_needs_it_and_hardening_freezes_it():
    torch.manual_seed(0)
    x, y = two_moons(800, noise=0.15, seed=2)
    model, log = _moons_run(x, y)
    first = sum(log.active[n][0] for n in log.total)
    last = sum(log.active[n][-1] for n in log.total)
    assert log.val_error[8] > 8 and log.val_error[-1] < 3  # 3-3 units cannot fit the moons; the grown net can
    assert last >= 3 * first
    hard = [i for i, s in enumerate(log.stage) if s == "hardening"]
    assert hard and all(log.switched_on[n][i] == 0 and log.switched_off[n][i] == 0 for n in log.total for i in hard)
    before = active_units(model)
    train_plastic(
        model, (x[:400], y[:400]), (x[400:], y[400:]), 3, KSchedule(k=K_HARD, plastic_from=1), batch_size=32, quiet=True
    )
    assert all(torch.equal(before[n], active_units(model)[n]) for n in before)


def test_pruning_shrinks_the_full_network_on_the_same_task():
    torch.manual_seed(0)
    x, y = two_moons(800, noise=0.15, seed=2)
    _, log = _moons_run(x, y, init_active=(1.0, 1.0))
    assert log.architecture(0) == "100-80" and log.val_error[-1] < 1.5
    assert sum(log.active[n][-1] for n in log.total) < 60  # 28-24 here (expansion reaches 43-39)


def test_no_needless_growth_on_an_easy_task():
    torch.manual_seed(0)
    y = torch.arange(800) % 2
    x = torch.randn(800, 2) * 0.3 + torch.stack([y * 4.0 - 2.0, torch.zeros(800)], 1)  # two far-apart blobs
    model, log = _moons_run(x, y)
    assert log.val_error[-1] < 1
    assert sum(log.active[n][-1] for n in log.total) <= sum(log.active[n][0] for n in log.total)


def test_bad_input():
    with pytest.raises(GatelabError, match="k must be a finite number >= 0"):
        set_k(make_plastic(mlp(4, (3,), 2)), -1.0)
    with pytest.raises(GatelabError, match="finite number >= 0"):
        make_plastic(mlp(4, (3,), 2), k=-2.0)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(GatelabError, match=r"init_active .* \(0, 1\]"):
            make_plastic(mlp(4, (3,), 2), init_active=bad)
    model = make_plastic(mlp(4, (3,), 2))
    data = (torch.randn(8, 4), torch.randint(0, 2, (8,)))
    with pytest.raises(GatelabError, match="never hardens"):
        train_plastic(model, data, data, 5, KSchedule(k=7.0), harden=True)
    with pytest.raises(GatelabError, match="never hardens"):
        train_plastic(model, data, data, 5, KSchedule(k=7.0, harden_from=9), harden=True)
    with pytest.raises(GatelabError, match="must come after"):
        KSchedule(k=7.0, plastic_from=5, harden_from=3).validate()


@pytest.mark.parametrize("k,awake,asleep", [(1.0, 0.6055, 0.003288), (7.0, 0.9526, 4.248e-18)])
def test_authors_start_places_phi_at_k_7_whatever_the_starting_k(k, awake, asleep):
    """NPNLeNet5 is built at k = 7 (phi = 3/7 and -40/7); the expansion then runs at k = 1, where a sleeping
    unit is drawn one step in 300 and an awake one is dropped four steps in ten (leo-yangli/npns)."""
    model = make_plastic(mlp(4, (20,), 2), init_active=0.15, k=k, layers=["fc2"])
    (gate,) = gates(model)
    torch.testing.assert_close(gate.phi.detach(), torch.tensor([3 / 7] * 3 + [-40 / 7] * 17))
    p = gate.prob_open().detach()
    assert torch.allclose(p[:3], torch.tensor(awake), rtol=1e-3)
    assert torch.allclose(p[3:], torch.tensor(asleep), rtol=1e-2)
    with pytest.raises(GatelabError, match="logits must be"):
        make_plastic(mlp(4, (3,), 2), logits=(-1.0, 1.0))
    with pytest.raises(GatelabError, match="logits must be"):
        make_plastic(mlp(4, (3,), 2), logits=(-1.0, 1.0))


def test_growth_wakes_one_unit_a_layer_and_pauses_in_a_layer_while_one_sleeps():
    torch.manual_seed(0)
    model = make_plastic(mlp(4, (10, 8), 2), init_active=[0.3, 0.25], k=1.0, layers=["fc2", "fc3"])
    first, second = gates(model)
    size = {"fc2": 3, "fc3": 2}
    _grow(model, size)
    assert size == {"fc2": 4, "fc3": 3}
    assert int((first.phi.abs() < 0.1).sum()) == 1 and int((second.phi.abs() < 0.1).sum()) == 1  # new: k phi ~ 0
    with torch.no_grad():
        first.phi.copy_(torch.where(first.phi > 0.2, -40 / 7, first.phi))  # fc2 lets its start units go
        second.phi.copy_(torch.where(second.phi.abs() < 0.1, 1.0, second.phi))
    _grow(model, size)
    assert size == {"fc2": 4, "fc3": 4} and int((second.phi.abs() < 0.1).sum()) == 1
    with torch.no_grad():  # fc2's units wake again: it grows again, as the authors' expand_layer re-checks
        first.phi[:4] = 1.0
    _grow(model, size)
    phi = first.phi.detach()
    assert size["fc2"] == 5 and abs(float(phi[4])) < 0.1 and float(phi[5]) == pytest.approx(-40 / 7)


def test_authors_expansion_start_wires_fc1_to_the_awake_conv2_channels():
    """LeNet-5's 3-3-3 start at k = 1: every active fc1 input must read a channel that conv2 keeps awake.

    The cause of the expansion that never learned: active units chosen at random per layer, so most of
    fc1's 48 active inputs read hibernating conv2 channels (constant, whatever the image) and fc2's few
    active inputs could all be dead. With test-time gates, each active fc1 input must vary with the image.
    """
    torch.manual_seed(0)
    model = make_plastic(lenet5_caffe(), **AUTHORS_STARTS["expand"])
    assert [int(m.sum()) for m in active_units(model).values()] == [3, 3, 48, 3]
    seen = {}
    model.fc1.register_forward_pre_hook(lambda module, args: seen.update(fc1=args[0].detach()))
    model.eval()(torch.randn(32, 1, 28, 28))  # (inputs of both signs: no awake unit stays at ReLU's 0 for all 32)
    fc1_active = active_units(model)["fc1"]
    varies = seen["fc1"].std(0) > 1e-6  # fc1's inputs before its gates: conv2's pooled outputs
    assert int(varies.sum()) == 48 and bool((varies == fc1_active).all())
