"""Both NICE trainers checkpoint and resume exactly, choose on validation data, and never read the test split."""

import os
import signal
from dataclasses import replace

import pytest
import torch

from gatelab.checkpoint import Interrupted, load_state
from gatelab.errors import GatelabError
from gatelab.nice import NICE, ClassifierConfig, NICEConfig, train_classifier


def RegionClassifier():  # noqa: N802 (a fixed classifier, built alike every call)
    """A fixed linear classifier: two classes from the pixels."""
    torch.manual_seed(123)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2))


def region_images(n):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(n))


def interrupt_at_call(monkeypatch, target, name, call):
    """Make ``target.name`` send this process SIGINT on its ``call``-th call, as Ctrl-C would; returns an undo."""
    original, calls = getattr(target, name), []

    def wrapped(*args, **kw):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kw)

    monkeypatch.setattr(target, name, wrapped)
    return lambda: monkeypatch.setattr(target, name, original)


def test_interrupted_mask_training_resumes_exactly(tmp_path, monkeypatch, one_thread):
    config = NICEConfig(lam=1.0, epochs=2, lr_drop_epoch=1, batch_size=10)
    x = region_images(40)  # 4 steps an epoch
    whole = NICE(RegionClassifier(), config).fit(x, quiet=True)

    ckpt = tmp_path / "masks.ckpt"
    undo = interrupt_at_call(monkeypatch, NICE, "_loss", 6)  # the second step of the second epoch
    with pytest.raises(Interrupted, match="resume with --resume"):
        NICE(RegionClassifier(), config).fit(x, quiet=True, checkpoint=ckpt)
    undo()
    saved = load_state(ckpt)
    assert (saved["epoch"], saved["step"]) == (1, 2) and len(saved["history"]) == 1

    resumed = NICE(RegionClassifier(), config).fit(x, quiet=True, checkpoint=ckpt, resume=ckpt)
    assert resumed.history_ == whole.history_
    for key, value in whole.mask_net_.state_dict().items():
        assert torch.equal(value, resumed.mask_net_.state_dict()[key]), key
    assert load_state(ckpt)["epoch"] == 2  # the last epoch's end was saved


def test_interrupted_per_image_masks_resume_exactly(tmp_path, monkeypatch, one_thread):
    nice = NICE(RegionClassifier(), NICEConfig(mode="per_image", lam=1.0, steps=10))
    x = region_images(6)  # batches of 4 and 2 images
    whole = nice.gate_parameters(x, batch_size=4)

    ckpt = tmp_path / "per-image.ckpt"
    undo = interrupt_at_call(monkeypatch, NICE, "_loss", 13)  # the third step of the second batch
    with pytest.raises(Interrupted):
        nice.gate_parameters(x, batch_size=4, checkpoint=ckpt)
    undo()
    saved = load_state(ckpt)
    assert (saved["batch"], saved["step"], len(saved["done"])) == (1, 3, 1)
    assert torch.equal(nice.gate_parameters(x, batch_size=4, resume=ckpt), whole)
    with pytest.raises(GatelabError, match="cannot resume"):  # the checkpoint belongs to other images
        nice.gate_parameters(region_images(7), batch_size=4, resume=ckpt)


def test_log_dir_gets_the_epoch_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    NICE(RegionClassifier(), NICEConfig(epochs=2, batch_size=10)).fit(region_images(10), quiet=True, log_dir=tmp_path)
    (events,) = tmp_path.glob("events.out.tfevents.*")
    assert b"data_loss" in events.read_bytes() and b"open_fraction" in events.read_bytes()


def test_resume_refuses_a_different_configuration(tmp_path):
    ckpt = tmp_path / "masks.ckpt"
    config = NICEConfig(lam=1.0, epochs=1, batch_size=20)
    NICE(RegionClassifier(), config).fit(region_images(20), quiet=True, checkpoint=ckpt)
    with pytest.raises(GatelabError, match="lam: 1.0 in the checkpoint, 3.0 now"):
        NICE(RegionClassifier(), replace(config, lam=3.0)).fit(region_images(20), resume=ckpt)
    # more epochs may be asked for: training continues from the saved end
    longer = NICE(RegionClassifier(), replace(config, epochs=2)).fit(region_images(20), quiet=True, resume=ckpt)
    assert [h["epoch"] for h in longer.history_] == [1, 2]


def test_classifier_resumes_exactly_and_keeps_the_best_validation_epoch(tmp_path, monkeypatch, one_thread, split_reads):
    config = ClassifierConfig(epochs=2, batch_size=100, train_examples=500, val_size=100)
    whole, history = train_classifier(config, quiet=True)
    assert [h["epoch"] for h in history] == [1, 2] and all(0 <= h["validation_error"] <= 100 for h in history)

    ckpt = tmp_path / "clf.ckpt"

    # 5 steps an epoch; calls 1-5 train epoch 1, call 6 scores the validation split, 7-8 train epoch 2
    undo = interrupt_at_call(monkeypatch, torch.nn.functional, "cross_entropy", 8)
    with pytest.raises(Interrupted):
        train_classifier(config, quiet=True, checkpoint=ckpt)
    undo()
    assert (load_state(ckpt)["epoch"], load_state(ckpt)["step"]) == (1, 2)
    resumed, again = train_classifier(config, quiet=True, checkpoint=ckpt, resume=ckpt)
    assert again == history
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert "test" not in split_reads  # training chooses on the validation split only

    # the kept weights are those of the epoch with the lowest validation error
    best = min(history, key=lambda h: h["validation_error"])
    saved = load_state(ckpt)["extra"]
    assert saved["epoch"] == best["epoch"] and saved["error"] == best["validation_error"]
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in saved["weights"].items())


def test_fine_tuning_starts_from_the_given_classifier():
    config = ClassifierConfig(epochs=1, batch_size=100, train_examples=300, val_size=100)
    base, _ = train_classifier(config, quiet=True)
    still = ClassifierConfig(epochs=1, batch_size=100, train_examples=300, val_size=100, lr=1e-12)
    tuned, _ = train_classifier(still, quiet=True, init=base)  # a step too small to move: the weights stay
    for key, value in base.state_dict().items():
        assert torch.allclose(value, tuned.state_dict()[key], atol=1e-6), key
    fresh, _ = train_classifier(still, quiet=True)
    assert not torch.allclose(base.state_dict()["0.weight"], fresh.state_dict()["0.weight"], atol=1e-3)
