import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gatelab.activity.trainer import ActivityConfig, epoch_lr, evaluate, load_model, losses, predict, save_model, train
from gatelab.checkpoint import load_state
from gatelab.errors import GatelabError

TINY = dict(hidden=8, layers=2, frames=12, batch_size=4, val_size=4.0)


def test_resumed_training_equals_an_uninterrupted_one(toy_data, tmp_path, one_thread):
    config = ActivityConfig(epochs=3, **TINY)
    straight, history = train(toy_data, config, seed=3, quiet=True)
    ckpt = tmp_path / "ckpt.pt"
    train(toy_data, ActivityConfig(epochs=1, **TINY), seed=3, quiet=True, checkpoint=ckpt)
    resumed, history2 = train(toy_data, config, seed=3, quiet=True, checkpoint=ckpt, resume=ckpt)
    assert history2 == history
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_saved_model_predicts_like_the_trained_one(toy_data, tmp_path):
    config = ActivityConfig(epochs=1, **TINY)
    model, _ = train(toy_data, config, quiet=True)
    path = save_model(model, tmp_path / "m.safetensors", config, toy_data.layout, toy_data.classes)
    loaded, config2, meta = load_model(path)
    assert config2 == config and meta["classes"] == ["up", "side"]
    assert evaluate(loaded, toy_data) == evaluate(model, toy_data)


def test_a_short_training_learns_the_toy_actions_and_the_aids_train_too(toy_data):
    for config in (
        ActivityConfig(epochs=25, lr=1e-2, ensemble=1, **TINY),
        ActivityConfig(epochs=25, lr=1e-2, ensemble=1, **TINY).without_aids(),
    ):
        model, _ = train(toy_data, config, quiet=True)
        assert evaluate(model, toy_data)["accuracy"] >= 0.9


def test_stgcn_peer_trains_with_the_same_code(toy_data):
    config = ActivityConfig(arch="stgcn", channels=[8, 8, 16], epochs=2, **TINY)
    model, history = train(toy_data, config, quiet=True)
    assert len(history) == 2 and 0 <= evaluate(model, toy_data)["accuracy"] <= 1


def _gatelab(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "gatelab", *map(str, args)], env=env, **kw)


def test_training_killed_mid_run_resumes_and_finishes(toy_folder, tmp_path):
    out = tmp_path / "m.safetensors"
    ckpt = out.with_name(out.name + ".checkpoint.pt")
    args = ["activity", "train", toy_folder, "--out", out, "--hidden", "8", "--layers", "2", "--frames", "12"]
    args += ["--batch-size", "2", "--val-size", "2", "--epochs", "400", "--quiet", "--checkpoint-every", "0.05"]
    proc = _gatelab(*args, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), proc.stderr.read().decode()
    before = load_state(ckpt)
    position = (before["epoch"], before["step"])
    assert position < (400, 0)
    resume = [a for a in args if a != "--quiet"] + ["--resume", ckpt, "--epochs", str(before["epoch"] + 2)]
    done = _gatelab(*resume, stderr=subprocess.PIPE)
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err.decode()
    assert f"resuming {ckpt} at epoch {before['epoch'] + 1}, step {before['step']}" in err.decode()
    model, _, meta = load_model(out)
    assert meta["train_clips"] == 12 and len(meta["history"]) == 1


def test_cli_train_reads_the_test_subjects_once_after_training(monkeypatch, tmp_path):
    import gatelab.activity.protocols as protocols
    import gatelab.activity.trainer as training
    from gatelab.cli import main

    events, load, fit = [], protocols.load_split, training.train

    def recording_load(dataset, part, *a, **kw):
        events.append(f"read {part}")
        return load(dataset, part, *a, **kw)

    def recording_train(*a, **kw):
        result = fit(*a, **kw)
        events.append("trained")
        return result

    monkeypatch.setattr(protocols, "load_split", recording_load)
    monkeypatch.setattr(training, "train", recording_train)
    out = tmp_path / "m.safetensors"
    argv = ["activity", "train", "msr-action3d", "--subset", "AS1", "--epochs", "1", "--hidden", "8", "--layers", "2"]
    argv += ["--bones", "--no-motion2", "--frames", "8", "--label-fraction", "0.25", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert events == ["read train", "trained", "read test"]
    _, config, meta = load_model(out)
    assert 0 <= meta["test_accuracy"] <= 1 and meta["subset"] == "AS1"
    assert (config.bones, config.motion2, config.motion) == (True, False, True)  # the feature flags reach the model


def test_predict_gives_the_top_three_actions(toy_data, tmp_path, make_sequence):
    config = ActivityConfig(epochs=1, **TINY)
    model, _ = train(toy_data, config, quiet=True)
    save_model(model, tmp_path / "m.safetensors", config, toy_data.layout, toy_data.classes)
    loaded, config, meta = load_model(tmp_path / "m.safetensors")
    top = predict(loaded, config, meta, make_sequence(0))
    assert [a for a, _ in top] in (["up", "side"], ["side", "up"])
    assert sum(p for _, p in top) == pytest.approx(1.0, abs=1e-5)


def test_cosine_schedule_decays_from_lr_towards_zero_and_training_follows_it(toy_data):
    config = ActivityConfig(epochs=4, lr=1e-2, schedule="cosine", **TINY)
    rates = [epoch_lr(config, e) for e in range(4)]
    assert rates == pytest.approx([1e-2, 1e-2 * (2 + 2**0.5) / 4, 5e-3, 1e-2 * (2 - 2**0.5) / 4])
    assert [epoch_lr(ActivityConfig(epochs=4, lr=1e-2, schedule="constant"), e) for e in range(4)] == [1e-2] * 4
    model, _ = train(toy_data, config, quiet=True)
    constant, _ = train(toy_data, ActivityConfig(epochs=4, lr=1e-2, schedule="constant", **TINY), quiet=True)
    differ = [not torch.equal(a, b) for a, b in zip(model.state_dict().values(), constant.state_dict().values())]
    assert any(differ)  # the first epoch is the same; the decayed ones are not


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"schedule": "step"}, "unknown lr schedule 'step'; accepted: constant, cosine"),
        ({"keep": "mean"}, "unknown epoch to keep .mean.; accepted: best, last"),
        ({"val_size": 0.0, "keep": "best"}, r"keep 'best' chooses the epoch .* needs val_size > 0"),
        ({"val_size": -1.0}, r"val_size must be 0 \(none held out\), a count >= 1 or a fraction"),
        ({"val_size": 2.5}, r"val_size must be 0 \(none held out\), a count >= 1 or a fraction"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
        ({"label_smoothing": -0.1}, r"label_smoothing must be in \[0, 1\)"),
        ({"label_smoothing": float("nan")}, r"label_smoothing must be in \[0, 1\)"),
    ],
)
def test_config_refuses_unknown_schedules_and_impossible_smoothing(bad, message):
    with pytest.raises(GatelabError, match=message):
        ActivityConfig(**bad).validate()


def test_label_smoothing_changes_the_loss_as_cross_entropy_defines_it():
    from gatelab.activity.models import BLSTMClassifier

    torch.manual_seed(0)
    model = BLSTMClassifier(20, 3, hidden=4, layers=2).eval()  # no dropout: both passes give the same logits
    x, y = torch.randn(5, 6, 20, 3), torch.tensor([0, 1, 2, 0, 1])
    for smoothing in (0.0, 0.2):
        config = ActivityConfig(label_smoothing=smoothing, injection_weight=0.5)
        total, main = losses(model, x, y, config)
        logits = model.forward_all(x)
        expected = [torch.nn.functional.cross_entropy(z, y, label_smoothing=smoothing) for z in logits]
        assert float(main.detach()) == pytest.approx(float(expected[-1].detach()))
        assert float(total.detach()) == pytest.approx(float((expected[-1] + 0.5 * expected[0]).detach()))


@pytest.mark.parametrize("keep", ["best", "last"])
def test_keep_returns_the_best_validation_epoch_or_the_last_one(toy_data, tmp_path, keep):
    ckpt = tmp_path / "ckpt.pt"
    model, history = train(toy_data, ActivityConfig(epochs=3, keep=keep, **TINY), quiet=True, checkpoint=ckpt)
    saved = load_state(ckpt)
    expected = saved["extra"]["weights"] if keep == "best" else saved["model"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert len(history) == 3 and all("validation_error" in h for h in history)


def test_defaults_are_the_ones_the_readme_numbers_were_measured_with():
    c = ActivityConfig()
    assert (c.epochs, c.val_size, c.keep, c.lr, c.schedule, c.batch_size) == (120, 0.0, "last", 3e-3, "constant", 32)
    assert (c.hidden, c.layers, c.dropout, c.frames, c.input_norm) == (64, 2, 0.3, 32, True)
    assert (c.motion, c.motion2, c.bones) == (True, True, False)
    assert (c.rotation, c.scale, c.translation, c.jitter, c.crop) == (45.0, 0.2, 0.2, 0.02, 0.7)
    assert (c.frame_dropout_rate, c.injection_weight, c.ensemble) == (0.25, 0.3, 3)


def test_val_size_zero_trains_on_every_clip_and_records_no_validation(toy_data, monkeypatch):
    import gatelab.activity.trainer as trainer

    seen = []

    def spy(*args, **kw):
        seen.append((args[4], kw["epoch_end"]))  # the number of training clips, and the validation hook
        return train_epochs(*args, **kw)

    train_epochs = trainer.train_epochs
    monkeypatch.setattr(trainer, "train_epochs", spy)
    for size in (0.0, 4.0):
        _, history = train(toy_data, ActivityConfig(epochs=1, **{**TINY, "val_size": size}), quiet=True)
        assert ("validation_error" in history[0]) == (size > 0)
    assert [n for n, _ in seen] == [len(toy_data), len(toy_data) - 4]
    assert seen[0][1] is None and seen[1][1] is not None


def test_a_model_saved_before_input_norm_and_the_feature_switches_existed_still_loads(toy_data, tmp_path):
    from dataclasses import asdict

    from gatelab.weights import save_weights

    config = ActivityConfig(epochs=1, input_norm=False, bones=False, motion2=False, ensemble=1, **TINY)
    model, _ = train(toy_data, config, quiet=True)
    old = {k: v for k, v in asdict(config).items() if k not in ("input_norm", "bones", "motion2", "ensemble")}
    meta = {"format": "gatelab-activity", "config": old, "layout": toy_data.layout, "classes": toy_data.classes}
    loaded, config2, _ = load_model(save_weights(model, tmp_path / "old.safetensors", meta))
    assert (config2.input_norm, config2.bones, config2.motion2, config2.ensemble) == (False, False, False, 1)
    assert evaluate(loaded, toy_data) == evaluate(model, toy_data)


def test_an_ensemble_trains_every_member_on_its_own_draws_and_its_file_predicts_like_it(
    toy_data, tmp_path, monkeypatch
):
    import gatelab.activity.trainer as trainer
    from gatelab.activity.models import build_model, members

    torch.manual_seed(0)
    config = ActivityConfig(epochs=2, ensemble=2, **TINY)
    start = [{k: v.clone() for k, v in m.state_dict().items()} for m in members(build_model(config, "utd-mhad20", 2))]
    draws, real = [], trainer.frame_dropout
    monkeypatch.setattr(trainer, "frame_dropout", lambda x, rate: draws.append(len(x)) or real(x, rate))
    model, _ = train(toy_data, config, quiet=True)
    steps = 2 * -(-(len(toy_data) - 4) // 4)
    assert len(draws) == 2 * steps  # a frame-dropout draw per member and step
    for before, member in zip(start, members(model)):  # both start where build_model starts them, and both learn
        assert not torch.equal(before["head.weight"], member.state_dict()["head.weight"])
    path = save_model(model, tmp_path / "e.safetensors", config, toy_data.layout, toy_data.classes)
    loaded, config2, _ = load_model(path)
    assert config2.ensemble == 2 and len(members(loaded)) == 2
    torch.testing.assert_close(loaded(toy_data.x), model(toy_data.x))
