"""The Defense-VAE reproductions' plumbing on a tiny setting: stages, checkpoints, one test read after training,
the table's rows and plot, and a resumed run that skips finished stages."""

import functools
import json
import os
import signal

import pytest

import gatelab.defense.purifier as purifier_module
import gatelab.defense.reproductions as reproductions
from gatelab.checkpoint import Interrupted
from gatelab.defense import DefenseVAE, ProjectionPurifier
from gatelab.reproduce import run

TINY = {
    "classifier_examples": 60,
    "classifier_epochs": 1,
    "val_size": 30,
    "pair_images": 20,
    "cw_images": 10,
    "vae_latent": 4,
    "vae_epochs": 1,
    "test_images": 10,
    "projection_images": 4,
}
STAGES = ["classifier", "pairs", "vae"]


@pytest.fixture
def events(monkeypatch, split_reads, one_thread):
    """The tiny quick setting and a short projection; ``split_reads`` also records each training as a tuple."""
    monkeypatch.setattr(reproductions, "QUICK", TINY)
    monkeypatch.setattr(reproductions, "ProjectionPurifier", functools.partial(ProjectionPurifier, steps=5, restarts=2))
    train, fit = reproductions.train_classifier, DefenseVAE.fit

    def train_classifier(*args, **kw):
        split_reads.append(("train_classifier", kw.get("resume")))
        return train(*args, **kw)

    def vae_fit(self, *args, **kw):
        split_reads.append(("fit", kw.get("resume")))
        return fit(self, *args, **kw)

    monkeypatch.setattr(reproductions, "train_classifier", train_classifier)
    monkeypatch.setattr(DefenseVAE, "fit", vae_fit)
    return split_reads


def test_quick_reproduction_plumbing(tmp_path, events):
    folder = run("defense-vae-mnist", quick=True, out=tmp_path, echo=None, quiet=True)
    # every training happens before the test split is read, and it is read once
    assert events.count("test") == 1
    assert events.index("test") > max(i for i, e in enumerate(events) if isinstance(e, tuple))
    assert sorted(p.stem for p in (folder / "stages").glob("*.json")) == STAGES + ["wall"]
    assert sorted(p.stem for p in (folder / "checkpoints").glob("*.pt")) == ["classifier", "vae"]

    results = json.loads((folder / "results.json").read_text())
    assert results["settings"]["training pairs"] == 20 * 2 * 4 + 10 * 4  # fgsm, rand_fgsm on 20; cw on 10; 4 eps
    table = results["results"]["accuracy"]
    assert set(table) == {"clean", "fgsm", "rand_fgsm", "cw", "adaptive_pgd"}
    assert set(table["fgsm"]) == {"undefended", "defense_vae", "projection"}
    assert set(table["adaptive_pgd"]) == {"defense_vae"}
    assert results["results"]["test_images"] == 10 and results["results"]["projection_images"] == 4
    whats = [r["what"] for r in results["table"]]
    for defence in ("no defence", "Defense-VAE mode 1", "projection baseline"):
        rows = [w for w in whats if w.startswith(defence + ":") and w.endswith("(%)")]
        assert len(rows) == (5 if defence == "Defense-VAE mode 1" else 4)  # the adaptive PGD: Defense-VAE only
    assert sum("seconds per 1,000 images" in w for w in whats) == 2
    assert all(r["paper"] is None and r["reference"] is None for r in results["table"])
    assert all(0 <= table[r][c] <= 1 for r in table for c in table[r])
    report = (folder / "report.md").read_text()
    assert "modes 2" in report and "could not be retrieved offline" in report and "extrapolated from 4" in report
    assert (folder / "accuracy.png").stat().st_size > 1000


def test_an_interrupted_reproduction_resumes_the_stage_in_progress(tmp_path, monkeypatch, events):
    """On Fashion-MNIST, so that both registrations run end to end."""
    loss, calls = purifier_module.loss, []

    def interrupting_loss(*args):
        calls.append(1)
        if len(calls) == 5:  # the Defense-VAE's fifth step of 13
            os.kill(os.getpid(), signal.SIGINT)
        return loss(*args)

    monkeypatch.setattr(purifier_module, "loss", interrupting_loss)
    with pytest.raises(Interrupted) as info:
        run("defense-vae-fmnist", quick=True, out=tmp_path, echo=None, quiet=True)
    assert "resume with: gatelab reproduce defense-vae-fmnist --quick --seed 0 --resume" in info.value.message
    (work,) = tmp_path.iterdir()
    assert sorted(p.stem for p in (work / "stages").glob("*.json")) == ["classifier", "pairs", "wall"]
    assert "test" not in events
    del events[:]

    monkeypatch.setattr(purifier_module, "loss", loss)
    folder = run("defense-vae-fmnist", quick=True, out=tmp_path, resume=work, echo=None, quiet=True)
    assert [e for e in events if isinstance(e, tuple)] == [("fit", work / "checkpoints" / "vae.pt")]
    assert events.count("test") == 1
    assert not work.exists() and (folder / "report.md").is_file()
    assert sorted(p.stem for p in (folder / "stages").glob("*.json")) == STAGES + ["wall"]
