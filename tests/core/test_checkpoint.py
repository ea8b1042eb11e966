"""Checkpoints: atomic files, RNG states, config checks, and signals turned into a save and a clean stop."""

import os
import random
import signal
import warnings

import numpy as np
import pytest
import torch

from gatelab.checkpoint import (
    Checkpointer,
    Interrupted,
    check_resumable,
    load_state,
    rng_state,
    save_state,
    set_rng_state,
)
from gatelab.errors import GatelabError


def test_rng_states_round_trip_through_a_file(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    save_state(tmp_path / "c.pt", {"format": "test", "rng": rng_state()})
    expected = torch.rand(3), np.random.rand(3), random.random()
    torch.rand(5), np.random.rand(5), random.random()  # move every generator on
    set_rng_state(load_state(tmp_path / "c.pt")["rng"])
    got = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_saved_files_have_ordinary_permissions(tmp_path):
    path = save_state(tmp_path / "c.pt", {"format": "test"})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert not [p for p in tmp_path.iterdir() if p.name != "c.pt"]  # no temporary file left


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_unreadable_checkpoints_give_the_library_error(tmp_path, content):
    path = tmp_path / "c.pt"
    if content is None:  # a truncated real checkpoint
        save_state(path, {"format": "test", "w": torch.randn(1000)})
        path.write_bytes(path.read_bytes()[:500])
    else:
        path.write_bytes(content)
    with pytest.raises(GatelabError, match="c.pt"):
        load_state(path)
    with pytest.raises(GatelabError, match="does not exist"):
        load_state(tmp_path / "missing.pt")


def test_a_foreign_pickle_protocol_is_one_error_and_no_warning(tmp_path):
    """Random bytes that start like a pickle of protocol 179: torch warns before failing; only our error remains."""
    path = tmp_path / "c.pt"
    path.write_bytes(b"\x80\xb3" + bytes(range(256)) * 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(GatelabError, match="c.pt is not a readable gatelab checkpoint"):
            load_state(path)
    assert not caught, [str(w.message)[:100] for w in caught]


def test_a_pickle_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": "test", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(GatelabError):
        load_state(tmp_path / "evil.pt")


def test_resume_refuses_another_kind_or_config():
    state = {"format": "gates", "config": {"lr": 0.1, "epochs": 5}}
    check_resumable(state, "gates", {"lr": 0.1, "epochs": 9}, "c.pt", may_differ=("epochs",))
    with pytest.raises(GatelabError, match="lr: 0.1 in the checkpoint, 0.2 now"):
        check_resumable(state, "gates", {"lr": 0.2, "epochs": 5}, "c.pt")
    with pytest.raises(GatelabError, match="not a 'lm' one"):
        check_resumable(state, "lm", {"lr": 0.1, "epochs": 5}, "c.pt")
    # a field added after the checkpoint was written counts as its default, and only that
    defaults = {"lr": 0.01, "epochs": 200, "init": "torch"}
    check_resumable(state, "gates", {"lr": 0.1, "epochs": 5, "init": "torch"}, "c.pt", defaults=defaults)
    with pytest.raises(GatelabError, match="init: 'torch' in the checkpoint, 'authors' now"):
        check_resumable(state, "gates", {"lr": 0.1, "epochs": 5, "init": "authors"}, "c.pt", defaults=defaults)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_and_stops_at_the_next_step(tmp_path, signum):
    path = tmp_path / "c.pt"
    steps = []
    before = signal.signal(signum, signal.default_int_handler)  # as in a foreground process
    with pytest.raises(Interrupted) as info:
        with Checkpointer(path, every=3600) as ckpt:
            for step in range(10):
                steps.append(step)
                if step == 3:
                    os.kill(os.getpid(), signum)
                ckpt.step(lambda: {"format": "test", "step": len(steps)})
    assert steps == [0, 1, 2, 3] and load_state(path)["step"] == 4
    assert info.value.exit_code == 128 + signum
    assert f"checkpoint saved to {path}; resume with --resume {path}" in info.value.message
    assert signal.getsignal(signum) is signal.default_int_handler  # handler restored
    signal.signal(signum, before)


def test_an_ignored_signal_stays_ignored(tmp_path):
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as under nohup
    try:
        with Checkpointer(tmp_path / "c.pt") as ckpt:
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)
            assert not ckpt.stop_requested
    finally:
        signal.signal(signal.SIGTERM, before)


def test_saves_every_epoch_and_when_due(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    saves = []
    monkeypatch.setattr("gatelab.checkpoint.save_state", lambda p, s: saves.append(s["step"]))
    clock = iter(range(0, 1000, 100))  # each step takes 100 s
    monkeypatch.setattr("gatelab.checkpoint.time.monotonic", lambda: next(clock))
    with Checkpointer(path, every=250) as ckpt:
        for step in range(1, 6):
            ckpt.step(lambda s=step: {"step": s})
        ckpt.epoch_end(lambda: {"step": "end"})
    assert saves == [3, "end"]  # 300 s >= 250 s after the start, then the epoch's end
    with pytest.raises(GatelabError):
        Checkpointer(path, every=0)
