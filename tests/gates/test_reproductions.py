"""The L0-ARM reproductions' plumbing, on tiny settings: report columns, stages, checkpoints, resume."""

import json
import os
import signal

import pytest

from gatelab.checkpoint import Interrupted
from gatelab.errors import GatelabError
from gatelab.gates import reproductions
from gatelab.gates import train as gates_train
from gatelab.reproduce import run

TINY = {"epochs": 1, "train_examples": 128, "val_size": 64, "batch_size": 64}


@pytest.fixture
def tiny(monkeypatch):
    """Quick settings shrunk to seconds, and the first 500 test images for the final evaluation."""
    monkeypatch.setattr(reproductions, "QUICK", {"mlp": TINY, "lenet5": TINY})
    reader = gates_train.mnist_tensors

    def first_test_images(name, split, root=None):
        x, y = reader(name, split, root)
        return (x[:500], y[:500]) if split == "test" else (x, y)

    monkeypatch.setattr(gates_train, "mnist_tensors", first_test_images)


@pytest.mark.parametrize("name,reference_arch", [("l0arm-mlp", "219-214-100"), ("l0arm-lenet5", "20-25-45-462")])
def test_quick_reproduction_reports_reference_not_paper(tmp_path, tiny, name, reference_arch):
    folder = run(name, quick=True, out=tmp_path, echo=None, quiet=True)
    results = json.loads((folder / "results.json").read_text())
    table = {row["what"]: row for row in results["table"]}
    arch = table["L0-ARM: kept architecture"]
    assert arch["paper"] is None and arch["reference"] == reference_arch
    assert arch["reference_source"].startswith("Louizos et al. 2018, Table 1")
    assert all(row["paper"] is None for row in results["table"])  # nothing the L0-ARM paper states was found
    model_name = name.split("-")[1]
    for method in ("arm", "hard_concrete"):
        history = results["results"][f"{model_name}-{method}"]["history"]
        assert history["epoch"] == [1] and len(history["val_error"]) == 1 and history["test_error"] is not None
        config = results["settings"][f"{model_name}-{method} config"]
        assert config["val_size"] == 64
        faster = reproductions.QUICK_HARD_CONCRETE[model_name] if method == "hard_concrete" else {}
        assert all(config[name] == value for name, value in faster.items())  # hard concrete's own gate speed
        assert (folder / f"{model_name}-{method}.safetensors").is_file()  # `gatelab gates summary` reads it
        assert (folder / "checkpoints" / f"{model_name}-{method}.pt").is_file()
    assert (folder / "training.png").stat().st_size > 1000
    assert (folder / "architecture.png").stat().st_size > 1000
    assert "reference" in (folder / "report.md").read_text()


def test_an_interrupted_reproduction_skips_the_finished_model_and_resumes_the_other(tmp_path, tiny, monkeypatch):
    fits = []
    real_fit, real_step = reproductions.fit, gates_train.train_step

    def spy_fit(config, **kwargs):
        fits.append((config.estimator, kwargs["resume"]))
        return real_fit(config, **kwargs)

    steps = []

    def step(*args, **kwargs):  # SIGTERM at the second model's first step, as a scheduler would send
        steps.append(1)
        if len(steps) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(reproductions, "fit", spy_fit)
    with monkeypatch.context() as patch:
        patch.setattr(gates_train, "train_step", step)
        with pytest.raises(Interrupted) as info:
            run("l0arm-mlp", quick=True, out=tmp_path, echo=None, quiet=True)
    (partial,) = tmp_path.glob(".l0arm-mlp-*.partial")
    assert f"--resume {partial}" in info.value.hint
    assert fits == [("arm", None), ("hard_concrete", None)]
    checkpoint = partial / "checkpoints" / "mlp-hard_concrete.pt"
    assert checkpoint.is_file() and (partial / "stages" / "mlp-arm.json").is_file()
    folder = run("l0arm-mlp", quick=True, out=tmp_path, resume=partial, echo=None, quiet=True)
    assert fits[2:] == [("hard_concrete", checkpoint)]  # the finished model is not trained again
    results = json.loads((folder / "results.json").read_text())
    assert set(results["results"]) == {"mlp-arm", "mlp-hard_concrete", "headline_arm"}


@pytest.mark.parametrize("sweep", [False, True])
def test_a_full_run_trains_its_models_in_worker_processes(tmp_path, monkeypatch, capfd, sweep):
    """The full run's plumbing on tiny settings: one worker process per model, results gathered as stages, and
    each worker's per-epoch lines on stderr, marked with its model. By default the chosen ARM lambda and hard
    concrete, with AR as a third row at the chosen lambda; with the sweep, every lambda and a choice among them."""
    tiny = {**TINY, "train_examples": 64, "val_size": 32}
    monkeypatch.setattr(reproductions, "FULL", {"mlp": {**reproductions.FULL["mlp"], **tiny}})
    overrides = ["sweep=true"] if sweep else []
    folder = run("l0arm-mlp", quick=False, out=tmp_path, echo=None, quiet=False, overrides=overrides)
    err = capfd.readouterr().err.splitlines()
    models = reproductions.STAGES["mlp"] if sweep else ("mlp-arm-lam0.07", "mlp-hard_concrete", "mlp-ar")
    assert len(models) == (6 if sweep else 3)
    for key in models:
        assert any(line.startswith(f"{key}: epoch 1/1: loss") for line in err), err
    results = json.loads((folder / "results.json").read_text())
    assert results["settings"]["worker processes"] == reproductions.WORKERS == 2
    assert results["settings"]["mlp-arm-lam0.07 config"]["lam"] == 0.07
    assert results["settings"]["mlp-ar config"]["estimator"] == "ar"
    assert {results["settings"][f"{key} config"]["weight_init"] for key in models} == {"authors"}
    chosen = results["results"].pop("headline_arm")
    assert chosen == reproductions.headline_arm("mlp", results["results"])
    assert set(results["results"]) == set(models)
    for key in results["results"]:
        history = results["results"][key]["history"]
        assert history["epoch"] == [1] and history["test_error"] is not None
        assert (folder / "stages" / f"{key}.json").is_file() and (folder / f"{key}.safetensors").is_file()
    assert not list(folder.glob("stages/*.worker.json"))
    report = (folder / "report.md").read_text()
    label = reproductions.STAGES["mlp"][chosen][0]
    assert f"{label} against hard concrete" in report
    ar_label = reproductions.STAGES["mlp"]["mlp-ar"][0]
    assert f"{ar_label} (one forward pass, the higher-variance estimator) against {label}" in report
    assert (f"Chosen: {label}." in report) == sweep and ("chose on validation (seed 0" in report) != sweep


@pytest.mark.parametrize("model", ["mlp", "lenet5"])
def test_ar_is_trained_at_the_chosen_arm_lambda(model):
    _, estimator, lam = reproductions.STAGES[model][f"{model}-ar"]
    assert estimator == "ar" and lam == reproductions.STAGES[model][reproductions.CHOSEN[model]][2]
    assert f"{model}-ar" in reproductions._stage_keys(model, quick=False, sweep=False)


def test_the_sweep_needs_the_full_schedule(tmp_path):
    with pytest.raises(GatelabError, match="sweep=true needs the full schedule"):
        run("l0arm-lenet5", quick=True, out=tmp_path, echo=None, overrides=["sweep=true"])
    assert not list(tmp_path.iterdir())  # refused before any work: no empty run folder left behind


def test_the_headline_arm_is_the_most_accurate_on_validation_within_hard_concretes_flops():
    def model(val_error, flops):
        return {"history": {"val_error": [9.0, val_error]}, "summary": {"flops_kept": flops}}

    results = {
        "lenet5-hard_concrete": model(1.2, 400),
        "lenet5-arm": model(1.6, 220),
        "lenet5-arm-readme": model(1.0, 840),  # the most accurate, but over hard concrete's FLOPs
        "lenet5-arm-fc2": model(1.4, 400),  # within them, at equal FLOPs
    }
    assert reproductions.headline_arm("lenet5", results) == "lenet5-arm-fc2"
    results["lenet5-arm-conv"] = model(1.4, 300)  # as accurate, with fewer FLOPs
    assert reproductions.headline_arm("lenet5", results) == "lenet5-arm-conv"
    del results["lenet5-arm-conv"]
    results["lenet5-arm-fc2"] = model(1.4, 401)
    assert reproductions.headline_arm("lenet5", results) == "lenet5-arm"
    del results["lenet5-arm"], results["lenet5-arm-fc2"]  # none within: the fewest FLOPs
    results["lenet5-arm-conv"] = model(1.1, 500)
    assert reproductions.headline_arm("lenet5", results) == "lenet5-arm-conv"
