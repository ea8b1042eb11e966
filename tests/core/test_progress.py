"""Progress lines and the TensorBoard switch."""

import builtins
import io
import sys

import pytest

from gatelab import progress
from gatelab.errors import GatelabError


def test_epoch_lines_go_to_stderr_unless_quiet(capsys):
    progress.say("epoch 1: loss 0.5")
    progress.say("hidden", quiet=True)
    captured = capsys.readouterr()
    assert captured.err == "epoch 1: loss 0.5\n" and captured.out == ""


def test_bars_are_off_when_stderr_is_not_a_terminal():
    with progress.bar(total=3) as b:
        assert b.disable


def test_a_worker_prefixes_its_lines_and_shows_no_bar(capsys):
    with progress.prefixed_lines("mlp-arm: "):
        progress.say("epoch 1/2: loss 0.5")
        progress.say("epoch 2/2: loss 0.4\ntest error 2%")
    progress.say("after")
    assert capsys.readouterr().err.splitlines() == [
        "mlp-arm: epoch 1/2: loss 0.5",
        "mlp-arm: epoch 2/2: loss 0.4",
        "mlp-arm: test error 2%",
        "after",
    ]


def test_a_worker_on_a_terminal_shows_no_bar(monkeypatch):
    terminal = io.StringIO()
    terminal.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", terminal)
    assert not progress.bar(10).disable
    with progress.prefixed_lines("mlp-arm: "):
        assert progress.bar(10).disable


def test_scalar_log_without_a_folder_does_nothing():
    with progress.ScalarLog(None) as log:
        log.add(1, loss=0.5)


def test_log_dir_without_tensorboard_says_how_to_install(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kw):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(GatelabError, match=r"pip install 'gatelab\[tensorboard\]'"):
        progress.ScalarLog(str(tmp_path))


def test_scalars_reach_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with progress.ScalarLog(str(tmp_path)) as log:
        for step in range(3):
            log.add(step, loss=1.0 / (step + 1), error=None)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert events.Tags()["scalars"] == ["loss"]
    assert [round(e.value, 4) for e in events.Scalars("loss")] == [1.0, 0.5, 0.3333]
