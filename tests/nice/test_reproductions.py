"""The NICE reproductions' plumbing on a tiny setting: stages, checkpoints, validation choices, one test read,
and a resumed run that skips finished stages."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch

import gatelab.nice.classifiers as classifiers
import gatelab.nice.reproductions as reproductions
from gatelab.checkpoint import Interrupted
from gatelab.nice import NICE, NICEConfig, load_classifier
from gatelab.reproduce import run

TINY = {
    "train_examples": 200,
    "val_size": 100,
    "test_images": 300,
    "panel_classes": 2,
    "classifier_epochs": 1,
    "finetune_epochs": 1,
    "nice_epochs": 1,
    "nice_lr": 1e-2,
    "compress_images": 30,
    "compress_steps": 3,
    "explain_images": 10,
    "explain_lams": (0.5, 2.0),
    "compress_lams": {"mnist": (1.0, 2.0), "fashion-mnist": (1.5,)},
}
STAGES = {
    "nice-mnist": [
        "classifier",
        "classifier-mixed",
        "masks-lowres-lam1",
        "masks-lowres-lam2",
        "masks-lowres-tuned-lam1",
        "masks-lowres-tuned-lam2",
        "masks-zeros-lam0.5",
        "masks-zeros-lam2",
    ],
    "nice-fmnist": [
        "classifier",
        "classifier-mixed",
        "masks-lowres-lam1.5",
        "masks-lowres-tuned-lam1.5",
        "masks-zeros-lam0.5",
        "masks-zeros-lam2",
    ],
}
TEST_MASKS = ["test-masks-fine-tuned", "test-masks-original"]  # the test split's per-image masks, checkpointed


@pytest.fixture
def events(monkeypatch, split_reads, one_thread):
    """The tiny quick setting; ``split_reads`` also records each training ("train_classifier", "fit"), each
    stage's per-image mask optimisation ("masks") and the test split's ("test-masks"), with the checkpoint it
    resumed."""
    monkeypatch.setattr(reproductions, "QUICK", TINY)
    train, fit, explain = classifiers.train_classifier, NICE.fit, NICE.explain

    def train_classifier(*args, **kw):
        split_reads.append(("train_classifier", kw.get("resume")))
        return train(*args, **kw)

    def nice_fit(self, *args, **kw):
        split_reads.append(("fit", kw.get("resume")))
        return fit(self, *args, **kw)

    def nice_explain(self, *args, **kw):
        if "checkpoint" in kw:  # a stage's masks or the test split's, not the panels'
            test = Path(kw["checkpoint"]).stem.startswith("test-masks")
            split_reads.append(("test-masks" if test else "masks", kw.get("resume")))
        return explain(self, *args, **kw)

    monkeypatch.setattr(reproductions, "train_classifier", train_classifier)
    monkeypatch.setattr(NICE, "fit", nice_fit)
    monkeypatch.setattr(NICE, "explain", nice_explain)
    return split_reads


@pytest.mark.parametrize("name", ["nice-mnist", "nice-fmnist"])
def test_quick_reproduction_plumbing(name, tmp_path, events):
    folder = run(name, quick=True, out=tmp_path, echo=None, quiet=True)
    # every training happens before the test split is read, and it is read once; then its masks are optimised
    assert events.count("test") == 1
    trainings = [i for i, e in enumerate(events) if isinstance(e, tuple) and e[0] != "test-masks"]
    assert events.index("test") > max(trainings)
    assert events[events.index("test") :].count(("test-masks", None)) == 2
    assert sorted(p.stem for p in (folder / "stages").glob("*.json")) == sorted(STAGES[name] + ["wall"])
    assert sorted(p.stem for p in (folder / "checkpoints").glob("*.pt")) == sorted(STAGES[name] + TEST_MASKS)

    results = json.loads((folder / "results.json").read_text())
    lams = TINY["compress_lams"]["mnist" if name == "nice-mnist" else "fashion-mnist"]
    validation = results["results"]["validation"]
    for setting in reproductions.CLASSIFIERS:  # each classifier's strength is chosen on validation
        assert [p["lam"] for p in validation["compression"][setting]] == list(lams)
        assert all(p["tables"] == "shared" for p in validation["compression"][setting])
        chosen = reproductions.choose_lam(validation["compression"][setting])
        assert results["results"]["chosen_lam"][setting] == chosen
        assert (
            len(validation["classifier"][setting]) == 1 and "validation_error" in validation["classifier"][setting][0]
        )
    # the test split is compressed at each classifier's chosen strength only, with both kinds of tables
    assert len(results["results"]["compression"]) == 2 * 2
    for p in results["results"]["compression"]:
        assert p["lam"] == results["results"]["chosen_lam"][p["classifier"]]
    # the explanation strength too: every candidate and gradient saliency scored on validation, both references
    explained = validation["explanation"]
    assert set(explained) == {"NICE lambda 0.5", "NICE lambda 2", "saliency"}
    assert all(set(by_reference) == {"zeros", "blur"} for by_reference in explained.values())
    chosen = reproductions.choose_explain_lam({lam: explained[f"NICE lambda {lam:g}"] for lam in TINY["explain_lams"]})
    assert results["results"]["chosen_explain_lam"] == results["results"]["explanation"]["lam"] == chosen
    floors = results["results"]["empty_mask_floor"]
    assert len(floors) == 4 and all(f["mask_density"] == 0 for f in floors)
    for reference in ("zeros", "blur"):
        assert set(results["results"]["explanation"]["scores"][reference]) == {
            "NICE",
            "saliency",
            "integrated_gradients",
            "occlusion",
            "random",
        }
    # the paper column holds the paper's own claim, beside the strength chosen on validation only
    with_paper = [r for r in results["table"] if r["paper"] is not None]
    assert len(with_paper) == 2 and all("original classifier" in r["what"] for r in with_paper)
    assert all("chosen on validation" in r["what"] and "shared" in r["what"] for r in with_paper)
    assert all(r["reference"] is None for r in results["table"])
    assert "100, a seeded split" in (folder / "report.md").read_text()
    for png in ("panels.png", "deletion_insertion_zeros.png", "deletion_insertion_blur.png", "tradeoff.png"):
        assert (folder / png).stat().st_size > 1000
    # compression masks switch whole JPEG blocks of each image; explanation masks stay per pixel, as in the paper
    classifier, _ = load_classifier(folder / "classifier.safetensors")
    images = torch.rand(4, 1, 28, 28)
    config = NICEConfig(**results["settings"][f"NICE masks-lowres-lam{lams[0]:g}"])
    assert config.cell == reproductions.COMPRESS_CELL == 8 and config.mode == "per_image"
    lowres = NICE(classifier, config)
    blocks = lowres.saliency(images)[:, 0, :24, :24].unfold(1, 8, 8).unfold(2, 8, 8)  # the whole 8x8 blocks
    assert torch.all(blocks.amin(dim=(-1, -2)) == blocks.amax(dim=(-1, -2)))
    assert lowres.gate_parameters(images).std() > 0  # per-pixel parameters vary: the cells make blocks uniform
    assert NICE.load(folder / "masks-zeros-lam2.safetensors", classifier).config.cell == 1


def test_a_full_run_computes_its_masks_in_worker_processes_to_the_same_results(tmp_path, monkeypatch, events):
    quick = run("nice-fmnist", quick=True, out=tmp_path / "quick", echo=None, quiet=True)
    del events[:]
    monkeypatch.setattr(reproductions, "FULL", TINY)
    full = run("nice-fmnist", quick=False, out=tmp_path / "full", echo=None, quiet=True)
    # the explanation network and the validation masks were computed in the two worker processes, none in this one
    assert [e for e in events if isinstance(e, tuple) and e[0] in ("fit", "masks")] == []
    a, b = (json.loads((folder / "results.json").read_text()) for folder in (quick, full))
    assert b["settings"]["worker processes"] == reproductions.WORKERS == 2
    # one thread each, seeded: the workers rebuild the same data, classifiers and settings as this process
    for key in ("validation", "chosen_lam", "chosen_explain_lam", "compression", "explanation"):
        assert b["results"][key] == a["results"][key], key


def test_choose_lam_prefers_the_smallest_size_within_the_accuracy_target():
    def point(lam, ratio, drop):  # drop: points below plain JPEG
        return {"lam": lam, "size_ratio": ratio, "accuracy_plain": 0.9, "accuracy_mixed": 0.9 - drop / 100}

    assert reproductions.choose_lam([point(1, 0.8, 0.1), point(2, 0.5, 0.9), point(3, 0.3, 5)]) == 2
    assert reproductions.choose_lam([point(1, 0.8, 2), point(2, 0.5, 3)]) == 1  # none in target: most accurate


def test_choose_explain_lam_prefers_the_best_insertion_minus_deletion_over_both_references():
    def scores(black, blurred):  # (deletion, insertion) AUCs
        return {
            reference: {"deletion_auc": d, "insertion_auc": i}
            for reference, (d, i) in (("zeros", black), ("blur", blurred))
        }

    found = {0.25: scores((0.19, 0.95), (0.44, 0.93)), 2.0: scores((0.37, 0.96), (0.56, 0.91))}
    assert reproductions.choose_explain_lam(found) == 0.25
    found[2.0] = scores((0.10, 0.96), (0.50, 0.90))  # 0.10 better with black, 0.09 worse blurred
    assert reproductions.choose_explain_lam(found) == 2.0


def test_an_interrupted_reproduction_resumes_the_stage_in_progress(tmp_path, monkeypatch, events):
    loss, calls = NICE._loss, []

    def interrupting_loss(self, *args):
        calls.append(1)
        if len(calls) == 9:  # two explanation networks' 2 steps, lambda 1's 3 per-image steps, then lambda 2's second
            os.kill(os.getpid(), signal.SIGINT)
        return loss(self, *args)

    monkeypatch.setattr(NICE, "_loss", interrupting_loss)
    with pytest.raises(Interrupted) as info:
        run("nice-mnist", quick=True, out=tmp_path, echo=None, quiet=True)
    assert "resume with: gatelab reproduce nice-mnist --quick --seed 0 --resume" in info.value.message
    (work,) = tmp_path.iterdir()
    assert sorted(p.stem for p in (work / "stages").glob("*.json")) == [
        "classifier",
        "classifier-mixed",
        "masks-lowres-lam1",
        "masks-zeros-lam0.5",
        "masks-zeros-lam2",
        "wall",
    ]
    del events[:]

    monkeypatch.setattr(NICE, "_loss", loss)
    folder = run("nice-mnist", quick=True, out=tmp_path, resume=work, echo=None, quiet=True)
    trainings = [e for e in events if isinstance(e, tuple)]
    # the stage in progress resumes, the finished ones are skipped, the fine-tuned classifier's masks start afresh
    assert (
        trainings
        == [("masks", work / "checkpoints" / "masks-lowres-lam2.pt"), ("masks", None), ("masks", None)]
        + [("test-masks", None)] * 2
    )
    assert not work.exists() and (folder / "report.md").is_file()
    assert sorted(p.stem for p in (folder / "stages").glob("*.json")) == sorted(STAGES["nice-mnist"] + ["wall"])


def test_a_run_interrupted_while_masking_the_test_split_resumes_those_masks(tmp_path, monkeypatch, events):
    whole = run("nice-mnist", quick=True, out=tmp_path / "whole", echo=None, quiet=True)
    loss, calls = NICE._loss, []

    def interrupting_loss(self, *args):
        calls.append(1)
        # the stages' 16 steps, the original classifier's 3 on the test split, then the fine-tuned one's second
        if len(calls) == 21:
            os.kill(os.getpid(), signal.SIGINT)
        return loss(self, *args)

    monkeypatch.setattr(NICE, "_loss", interrupting_loss)
    with pytest.raises(Interrupted):
        run("nice-mnist", quick=True, out=tmp_path / "cut", echo=None, quiet=True)
    (work,) = (tmp_path / "cut").iterdir()
    assert sorted(p.stem for p in (work / "stages").glob("*.json")) == sorted(STAGES["nice-mnist"] + ["wall"])
    del events[:]

    monkeypatch.setattr(NICE, "_loss", loss)
    folder = run("nice-mnist", quick=True, out=tmp_path / "cut", resume=work, echo=None, quiet=True)
    # no stage trains again; both classifiers' test masks continue from their checkpoints
    assert [e for e in events if isinstance(e, tuple)] == [
        ("test-masks", work / "checkpoints" / f"{name}.pt") for name in ("test-masks-original", "test-masks-fine-tuned")
    ]
    resumed, uninterrupted = (json.loads((f / "results.json").read_text())["results"] for f in (folder, whole))
    assert resumed["compression"] == uninterrupted["compression"]
