"""The blackout-ptb reproduction's plumbing on a tiny PTB-shaped text: stages, resume, and a test split read once."""

import importlib
import json
import os
import random
import signal

import pytest

from gatelab.checkpoint import Checkpointer, Interrupted, load_state
from gatelab.reproduce import available, run

repro = importlib.import_module("gatelab.lm.reproductions")
corpus_module = importlib.import_module("gatelab.lm.corpus")
store = importlib.import_module("gatelab.data.store")


@pytest.fixture
def tiny_ptb(tmp_path, monkeypatch):
    """PTB's three files replaced by a small random text, the quick setting by a tiny one; records file reads."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    for split, n in (("train", 300), ("valid", 40), ("test", 40)):
        lines = [" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(n)]
        (tmp_path / "data" / "ptb").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "ptb" / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("GATELAB_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(store, "verify", lambda path, md5, fix="": path)  # the stand-in is not the published file
    monkeypatch.setattr(repro, "QUICK", {"hidden": 8, "epochs": 2, "max_train_words": 1500, "samples": 5})
    monkeypatch.setattr(repro, "QUICK_EVAL_WORDS", 200)
    events = []

    class Recorded(corpus_module.LineCorpus):
        def __iter__(self):
            events.append(self.path.name)
            return super().__iter__()

    real_train = repro.train

    def recorded_train(corpus, config, **kw):
        events.append(f"train-{config.loss}")
        return real_train(corpus, config, **kw)

    monkeypatch.setattr(corpus_module, "LineCorpus", Recorded)
    monkeypatch.setattr(repro, "train", recorded_train)
    return events


def test_blackout_ptb_quick_reads_test_once_after_training(tiny_ptb, tmp_path):
    assert "blackout-ptb" in available()
    folder = run("blackout-ptb", quick=True, out=tmp_path / "runs", seed=0, echo=None, quiet=True)
    trained = [e for e in tiny_ptb if e.startswith("train-")]
    assert trained == ["train-softmax", "train-blackout", "train-nce", "train-nce"]  # NCE: fixed, then learned log Z
    assert tiny_ptb.count("ptb.test.txt") == 1
    assert tiny_ptb.index("ptb.test.txt") > len(tiny_ptb) - 1 - tiny_ptb[::-1].index("train-nce")  # test read last
    results = json.loads((folder / "results.json").read_text())
    runs = results["results"]["runs"]
    assert set(runs) == {"softmax", "blackout", "nce", "nce-learned-z"}
    assert all(len(r["valid_ppl"]) == 2 for r in runs.values())
    assert all(r["test_ppl"] > 1 for r in runs.values())
    assert all(row["paper"] is None for row in results["table"])  # nothing the paper itself states
    assert (folder / "report.md").is_file() and (folder / "valid_ppl.png").is_file()
    assert "BlackOut / full softmax ppl" in (folder / "report.md").read_text()


def test_interrupted_reproduction_resumes_in_progress_model_and_skips_finished(tiny_ptb, tmp_path, monkeypatch):
    real_step, steps = Checkpointer.step, []

    def step_then_signal(self, snapshot):  # SIGTERM in the middle of the second model (BlackOut)
        steps.append(1)
        if len(steps) == 8:  # each model takes 2 epochs of 3 chunks here
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, snapshot)

    monkeypatch.setattr(Checkpointer, "step", step_then_signal)
    with pytest.raises(Interrupted) as info:
        run("blackout-ptb", quick=True, out=tmp_path / "runs", seed=0, echo=None, quiet=True)
    monkeypatch.setattr(Checkpointer, "step", real_step)
    (partial,) = (tmp_path / "runs").glob(".blackout-ptb-*.partial")
    assert "--resume" in info.value.hint and (partial / "stages" / "train-softmax.json").is_file()
    assert load_state(partial / "checkpoints" / "blackout.pt")["position"]["chunk"] > 0  # stopped mid-epoch
    assert "ptb.test.txt" not in tiny_ptb
    tiny_ptb.clear()

    resumed = []
    real_train = repro.train
    monkeypatch.setattr(
        repro, "train", lambda c, cfg, **kw: resumed.append((cfg.loss, kw["resume"])) or real_train(c, cfg, **kw)
    )
    folder = run("blackout-ptb", quick=True, out=tmp_path / "runs", seed=0, resume=partial, echo=None, quiet=True)
    assert [loss for loss, _ in resumed] == ["blackout", "nce", "nce"]  # softmax finished: skipped
    assert resumed[0][1] == partial / "checkpoints" / "blackout.pt" and resumed[1][1] is resumed[2][1] is None
    assert json.loads((folder / "results.json").read_text())["results"]["runs"]["blackout"]["test_ppl"] > 1
