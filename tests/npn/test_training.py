"""NPN training: exact resume, validation-only choices, a seeded dense baseline."""

import os
import signal
from dataclasses import asdict

import pytest
import torch

import gatelab.npn.train as npn_train
from gatelab.checkpoint import Interrupted, load_state
from gatelab.data.synthetic import two_moons
from gatelab.errors import GatelabError
from gatelab.gates import gates, mlp
from gatelab.npn import K_HARD, KSchedule, make_plastic, train_plastic
from gatelab.npn.train import NPNConfig, dense_baseline, fit_npn


def _moons(**kw):
    """Six epochs on 200 points (7 batches each): ordinary, plastic with expansion steps on a better validation
    loss, hardening; lr x0.1 from epoch 5."""
    torch.manual_seed(0)
    x, y = two_moons(300, noise=0.15, seed=2)
    model = make_plastic(
        mlp(2, (100, 80), 2), init_active=[3 / 100, 3 / 80], k=7.0, lam=[0.05, 2.0], layers=["fc2", "fc3"]
    )
    schedule = KSchedule(k=7.0, plastic_from=2, harden_from=6)
    log = train_plastic(
        model, (x[:200], y[:200]), (x[200:], y[200:]), 6, schedule, lr=1e-2, batch_size=32, expand_fill=0.1,
        trigger="loss", weight_decay=5e-4, lr_decay_at=5, harden=True, quiet=True, **kw,
    )  # fmt: skip
    return model, log


@pytest.mark.parametrize(
    "where, position",
    [(("step", 17), (3, 3)), (("step", 7), (1, 7)), (("epoch", 3), (4, 0))],
    ids=["mid-epoch", "last-step", "epoch-end"],
)
def test_an_interrupted_run_resumes_to_exactly_the_uninterrupted_result(
    tmp_path, monkeypatch, one_thread, count_steps, where, position
):
    whole, whole_log = _moons()
    assert whole_log.stage == ["ordinary"] + ["plastic"] * 4 + ["hardening"]
    assert whole_log.active["fc2"][-1] > 3  # expansion steps happened, so the trigger's state matters

    path = tmp_path / "npn.pt"
    with monkeypatch.context() as m:
        on_epoch = None
        if where[0] == "step":
            count_steps(m, signal_at=where[1])
        else:
            on_epoch = lambda epoch, model, log: epoch == where[1] and os.kill(os.getpid(), signal.SIGTERM)  # noqa: E731
        with pytest.raises(Interrupted) as info:
            _moons(checkpoint=path, checkpoint_every=3600, on_epoch=on_epoch)
    assert info.value.path == path and info.value.exit_code == 128 + signal.SIGTERM
    saved = load_state(path)
    assert (saved["epoch"], saved["step"]) == position

    calls = count_steps(monkeypatch)  # count the steps the resumed run takes
    resumed, resumed_log = _moons(checkpoint=path, resume=path)
    assert len(calls) == 6 * 7 - ((position[0] - 1) * 7 + position[1])  # it starts where the checkpoint stopped
    assert asdict(resumed_log) == asdict(whole_log)
    assert load_state(path)["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)  # x0.1 from epoch 5
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert [g.estimator.g.k for g in gates(resumed)] == [g.estimator.g.k for g in gates(whole)]


def test_resume_refuses_another_configuration_or_a_broken_file(tmp_path):
    path = tmp_path / "npn.pt"
    x, y = two_moons(64, seed=1)
    args = ((x[:48], y[:48]), (x[48:], y[48:]), 1, KSchedule(k=7.0))
    train_plastic(make_plastic(mlp(2, (8,), 2)), *args, quiet=True, checkpoint=path)
    with pytest.raises(GatelabError, match="cannot resume .*lr: 0.001 in the checkpoint, 0.01 now"):
        train_plastic(make_plastic(mlp(2, (8,), 2)), *args, lr=1e-2, quiet=True, resume=path)
    with pytest.raises(GatelabError, match="not a checkpoint of this network"):
        train_plastic(make_plastic(mlp(2, (9,), 2)), *args, quiet=True, resume=path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(GatelabError, match="truncated"):
        train_plastic(make_plastic(mlp(2, (8,), 2)), *args, quiet=True, resume=path)


@pytest.fixture
def cached_mnist(monkeypatch):
    """Decode each MNIST file once in a test that trains several times."""
    cache, real = {}, npn_train.mnist_tensors
    cached = lambda *a: cache.get(a) or cache.setdefault(a, real(*a))  # noqa: E731
    monkeypatch.setattr(npn_train, "mnist_tensors", cached)
    monkeypatch.setattr("gatelab.data.splits.mnist_tensors", cached)


def _tiny(**kw):
    settings = dict(model="mlp", epochs=3, plastic_from=2, harden_from=3, train_examples=2000, val_size=500)
    return NPNConfig(**{**settings, "batch_size": 64, **kw})


def test_fit_npn_chooses_on_validation_and_reads_the_test_split_once_at_the_end(monkeypatch, one_thread):
    events = []
    real = npn_train.mnist_tensors

    def reader(name, split, root=None):
        events.append(split)
        return real(name, split, root)

    monkeypatch.setattr(npn_train, "mnist_tensors", reader)
    monkeypatch.setattr("gatelab.data.splits.mnist_tensors", reader)
    model, log = fit_npn(_tiny(), quiet=True, on_epoch=lambda e, m, lg: events.append(f"epoch {e}"))
    assert events == ["train", "epoch 1", "epoch 2", "epoch 3", "test"]
    assert all(round(e * 5) == e * 5 for e in log.val_error)  # percentages of the 500 validation images
    # an accuracy floor after three epochs on 2,000 images (13.1% here), under an L0 penalty 30 times
    # stronger than with all 60,000 (lambda is per N examples)
    assert log.test_error < 15 and log.val_error[-1] < log.val_error[0]


def test_dense_baseline_is_seeded(cached_mnist):
    first = dense_baseline(_tiny(epochs=1, harden_from=None, seed=0), quiet=True)[1]
    again = dense_baseline(_tiny(epochs=1, harden_from=None, seed=0), quiet=True)[1]
    other = dense_baseline(_tiny(epochs=1, harden_from=None, seed=1), quiet=True)[1]
    assert (first.test_loss, first.test_error, first.val_error) == (again.test_loss, again.test_error, again.val_error)
    assert first.test_loss != other.test_loss and first.val_loss != other.val_loss
    assert first.total == {} and first.k == [K_HARD]  # no gates: ordinary training


def test_weight_decay_defaults_to_the_authors_per_model():
    """The authors divide LeNet-5's whole regularizer, L2 included, by N; the MLP's L2 is not divided."""
    assert NPNConfig(model="lenet5").resolved().weight_decay == pytest.approx(5e-4 / 60000)
    assert NPNConfig(model="mlp", plastic_from=2, harden_from=3, epochs=3).resolved().weight_decay == 5e-4
    assert NPNConfig(model="lenet5", weight_decay=1e-3).resolved().weight_decay == 1e-3


def test_bad_configs(cached_mnist):
    for bad, match in (
        (dict(train_examples=0), "train_examples must be an integer >= 1"),
        (dict(val_size=-5), "val_size must be an integer >= 1"),
        (dict(lam=float("nan")), "lam for 'fc1' is nan; accepted: a finite number >= 0"),
        (dict(init_active=0.0), r"init_active must be a fraction in \(0, 1\]"),
        (dict(weight_decay=float("nan")), "weight_decay must be a finite number >= 0"),
    ):
        with pytest.raises(GatelabError, match=match):
            fit_npn(_tiny(**bad))
    with pytest.raises(GatelabError, match=r"train_examples 5000 is outside \[1, 4999\]"):
        fit_npn(_tiny(train_examples=5000, val_size=55001))


def test_log_dir_gets_the_per_epoch_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = two_moons(64, seed=1)
    model = make_plastic(mlp(2, (8, 6), 2), init_active=0.5)
    log = train_plastic(model, (x[:48], y[:48]), (x[48:], y[48:]), 2, KSchedule(k=7.0), quiet=True, log_dir=tmp_path)
    events = EventAccumulator(str(tmp_path)).Reload()
    assert set(events.Tags()["scalars"]) == {
        "loss", "val_loss", "val_error", "switches", "active/fc1", "active/fc2", "active/fc3"
    }  # fmt: skip
    assert [e.value for e in events.Scalars("active/fc2")] == log.active["fc2"]
    assert [round(e.value, 3) for e in events.Scalars("val_error")] == [round(v, 3) for v in log.val_error]
