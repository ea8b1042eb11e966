"""The Defense-VAE reproductions' plumbing on a tiny setting: stages, checkpoints, one test read after training,
the table's rows and plot, and a resumed run that skips finished stages."""

import functools
import json
import os
import signal

import numpy as np
import pytest
import torch

import gatelab.defense.attacks as attacks_module
import gatelab.defense.purifier as purifier_module
import gatelab.defense.reproductions as reproductions
from gatelab.checkpoint import Interrupted
from gatelab.data import image_splits
from gatelab.defense import DefenseVAE, ProjectionPurifier, SubstituteConfig, load_pairs
from gatelab.reproduce import run

TINY = {
    "models": ("D",),
    "classifier_examples": 60,
    "classifier_epochs": 1,
    "val_size": 30,
    "pair_images": 20,
    "cw_images": 10,
    "vae_latent": 4,
    "vae_epochs": 1,
    "vae_batch": 16,
    "end_to_end_pairs": 32,
    "end_to_end_epochs": 1,
    "adversarial_examples": 40,
    "adversarial_epochs": 1,
    "adversarial_steps": 2,
    "adversarial_alpha": 0.1,
    "adversarial_from_clean": True,
    "test_images": 10,
    "adaptive_images": 4,
    "projection_images": 2,
    "bpda_images": 1,
}
STAGES = ["adversarial", "classifier", "mode_2", "mode_3", "pairs", "vae"]
COLUMNS = {"undefended", "defense_vae", "mode_2", "mode_3", "adversarial"}


@pytest.fixture
def events(monkeypatch, split_reads, one_thread):
    """The tiny quick setting and a short projection; ``split_reads`` also records each training as a tuple."""
    monkeypatch.setattr(reproductions, "QUICK", TINY)
    monkeypatch.setattr(reproductions, "ProjectionPurifier", functools.partial(ProjectionPurifier, steps=5, restarts=2))
    monkeypatch.setattr(reproductions, "SubstituteConfig", functools.partial(SubstituteConfig, rounds=2, epochs=1))
    monkeypatch.setattr(attacks_module, "PGD_STEPS", 3)  # plumbing only: 3 of the 40 adaptive PGD steps
    monkeypatch.setattr(attacks_module, "CW_STEPS", 5)
    fit = DefenseVAE.fit

    def recorded(name, fn):
        def wrapper(*args, **kw):
            split_reads.append((name, kw.get("resume")))
            return fn(*args, **kw)

        return wrapper

    for name in ("train_classifier", "fine_tune", "adversarial_training"):
        monkeypatch.setattr(reproductions, name, recorded(name, getattr(reproductions, name)))
    monkeypatch.setattr(DefenseVAE, "fit", recorded("fit", fit))
    return split_reads


def test_quick_reproduction_plumbing(tmp_path, events):
    # --set: a validation split that holds training image 1, which the pairs must then leave out
    folder = run("defense-vae-mnist", quick=True, out=tmp_path, echo=None, quiet=True, overrides=["val_size=1000"])
    first, _, _, _ = image_splits("mnist", 1000, seed=0, train_examples=20)
    clean = load_pairs(folder / "pairs" / "20-images")[1][:20]
    assert np.array_equal(clean, (255 * first).round().to(torch.uint8).numpy())
    # every training happens before the test split is read, and it is read once
    assert events.count("test") == 1
    assert events.index("test") > max(i for i, e in enumerate(events) if isinstance(e, tuple))
    assert [e[0] for e in events if isinstance(e, tuple)] == [
        "train_classifier",
        "fit",
        "train_classifier",
        "fine_tune",
        "adversarial_training",
    ]
    assert sorted(p.stem for p in (folder / "stages").glob("*.json")) == STAGES + ["wall"]
    assert sorted(p.stem for p in (folder / "checkpoints").glob("*.pt")) == [
        "classifier",
        "mode_2",
        "mode_3",
        "pgd",
        "vae",
    ]

    results = json.loads((folder / "results.json").read_text())
    # fgsm, rand_fgsm on 20; the paper's CW (cw_softmax) on 10; 4 eps
    assert results["settings"]["training pairs"] == 20 * 2 * 4 + 10 * 4
    table = results["results"]["accuracy"]
    assert set(table) == {"clean", "fgsm", "rand_fgsm", "cw_softmax", "cw", "black_box_fgsm", "adaptive_pgd"}
    assert set(table["fgsm"]) == COLUMNS | {"projection"} and set(table["black_box_fgsm"]) == COLUMNS | {"projection"}
    assert set(table["adaptive_pgd"]) == COLUMNS | {"projection"}  # BPDA through the projection
    res = results["results"]
    assert (res["test_images"], res["adaptive_images"], res["projection_images"], res["bpda_images"]) == (10, 4, 2, 1)
    assert all(round(4 * a, 6).is_integer() for c, a in table["adaptive_pgd"].items() if c != "projection")
    whats = [r["what"] for r in results["table"]]
    for defence in ("no defence", "Defense-VAE mode 1", "Defense-VAE mode 3", "PGD adversarial training"):
        assert len([w for w in whats if w.startswith(defence + ":") and w.endswith("(%)")]) == 7
    assert len([w for w in whats if w.startswith("projection baseline:") and w.endswith("(%)")]) == 7
    assert sum("seconds per 1,000 images" in w for w in whats) == 2
    assert all(r["paper"] is None and r["reference"] is None for r in results["table"])
    assert all(0 <= table[r][c] <= 1 for r in table for c in table[r])
    assert [h["images"] for h in res["training"]["substitute"]] == [150, 300]
    report = (folder / "report.md").read_text()
    assert "mode 3 at least as accurate as mode 1" in report and "could not be retrieved offline" in report
    assert "extrapolated from 2" in report and "BPDA (PGD as above" in report
    assert "- changed with --set: val_size=1000" in report and results["settings"]["val_size"] == 1000
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
    trained = [e for e in events if isinstance(e, tuple)]
    assert trained[0] == ("fit", work / "checkpoints" / "vae.pt") and "train_classifier" not in dict(trained[:1])
    assert [e[0] for e in trained] == ["fit", "train_classifier", "fine_tune", "adversarial_training"]
    assert events.count("test") == 1
    assert not work.exists() and (folder / "report.md").is_file()
    assert sorted(p.stem for p in (folder / "stages").glob("*.json")) == STAGES + ["wall"]


def test_a_run_of_several_models_trains_them_all_before_reading_the_test_split_once(tmp_path, monkeypatch, events):
    """The full run's wiring (models A-D) on two cheap models: every model's stages, checkpoints and files carry its
    name, its results sit under results["models"], its rows and targets say which model they are about."""
    monkeypatch.setattr(reproductions, "QUICK", {**TINY, "models": ("D", "E"), "bpda_images": 0})
    folder = run("defense-vae-mnist", quick=True, out=tmp_path, echo=None, quiet=True)
    assert events.count("test") == 1
    assert events.index("test") > max(i for i, e in enumerate(events) if isinstance(e, tuple))
    assert [e[0] for e in events if isinstance(e, tuple)] == 2 * [
        "train_classifier",
        "fit",
        "train_classifier",
        "fine_tune",
        "adversarial_training",
    ]
    assert sorted(p.stem for p in (folder / "stages").glob("*.json")) == sorted(
        [f"{s}-{m}" for s in STAGES for m in "DE"] + ["wall"]
    )
    assert {p.name for p in folder.glob("classifier*.safetensors")} == {
        "classifier-D.safetensors",
        "classifier-E.safetensors",
    }
    results = json.loads((folder / "results.json").read_text())
    assert results["settings"]["classifier-E"]["model"] == "E" and results["settings"]["models"] == "D, E"
    per_model = results["results"]["models"]
    assert set(per_model) == {"D", "E"} and "accuracy" not in results["results"]
    for m in "DE":
        assert set(per_model[m]["accuracy"]["cw_softmax"]) == COLUMNS | {"projection"}
        assert len(per_model[m]["training"]["classifier"]) == 1  # its one epoch
        whats = [r["what"] for r in results["table"] if r["what"].startswith(f"model {m}, ")]
        assert len(whats) == 5 * 7 + 6 + 2  # 5 defences x 7 rows, the projection's 6 (no BPDA), 2 timings
    report = (folder / "report.md").read_text()
    assert "model D, Target (mode 1" in report and "model E, Target (mode 1" in report
    assert report.count("Paper column empty") == 1
    assert (folder / "accuracy-D.png").is_file() and (folder / "accuracy-E.png").is_file()


def test_the_projection_target_compares_the_paper_attacks_not_clean_images():
    class Notes:
        quick = True

        def __init__(self):
            self.lines = []

        def note(self, line):
            self.lines.append(line)

    rows = ("clean", *reproductions.PAPER_ATTACKS)
    table = {row: {"defense_vae": 0.7, "projection": 0.2, "mode_3": 0.7} for row in rows}
    table["clean"] = {"defense_vae": 0.8, "projection": 1.0, "mode_3": 0.8}  # the projection keeps clean images
    table["fgsm"]["undefended"], table[reproductions.ADAPTIVE] = 0.0, {"undefended": 0.0}
    times = {"projection": 100.0, "defense_vae": 1.0}
    report = Notes()
    reproductions._targets(report, "fashion-mnist", table, times, "D", "")
    assert any("as the projection under every paper attack) met" in line for line in report.lines), report.lines
    table["cw_softmax"]["projection"] = 0.9
    report = Notes()
    reproductions._targets(report, "fashion-mnist", table, times, "D", "")
    assert any("as the projection under every paper attack) NOT met" in line for line in report.lines)
