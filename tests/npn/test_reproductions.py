"""The NPN reproductions' plumbing, on tiny settings: stages, checkpoints, resume, report."""

import json

import pytest
import torch

import gatelab.npn.reproductions as reproductions
import gatelab.npn.train as npn_train
from gatelab.checkpoint import Interrupted
from gatelab.npn.train import AUTHORS_STARTS, NPNConfig
from gatelab.reproduce import run

TINY_MOONS = dict(points=100, epochs=4, plastic_from=2, harden_from=4)  # 4 batches an epoch


@pytest.fixture
def tiny_moons(monkeypatch):
    monkeypatch.setattr(reproductions, "MOONS_QUICK", TINY_MOONS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_an_interrupted_reproduction_resumes_its_stage_and_skips_finished_ones(
    tmp_path, monkeypatch, tiny_moons, count_steps
):
    whole = json.loads((run("npn-moons", quick=True, out=tmp_path / "whole", echo=None) / "results.json").read_text())

    with monkeypatch.context() as m:
        count_steps(m, signal_at=16 + 6)  # all 16 steps of expansion, then 6 of pruning (its 2nd epoch)
        with pytest.raises(Interrupted) as info:
            run("npn-moons", quick=True, out=tmp_path / "cut", echo=None)
    (work,) = (tmp_path / "cut").iterdir()
    assert info.value.message.endswith(f"resume with: gatelab reproduce npn-moons --quick --seed 0 --resume {work}")
    assert work.name.endswith(".partial") and (work / "stages" / "moons-expansion.json").is_file()
    assert not (work / "stages" / "moons-pruning.json").exists()

    calls = count_steps(monkeypatch)
    folder = run("npn-moons", quick=True, out=tmp_path / "cut", resume=work, echo=None)
    assert len(calls) == 16 - 6  # expansion skipped; pruning continued from its checkpoint
    resumed = json.loads((folder / "results.json").read_text())
    assert resumed["results"] == whole["results"] and resumed["table"] == whole["table"]
    for png in ("active_units.png", "transition_rate.png", "decision_boundaries.png"):
        assert (folder / png).stat().st_size > 1000
    rows = {row["what"]: row for row in resumed["table"]}
    assert rows["pruning: switches during hardening"]["ours"] == 0
    assert all(row["paper"] is None for row in resumed["table"])  # the paper states no numbers for this


def test_quick_mnist_plumbing(tmp_path, monkeypatch):
    def tiny(model, start, seed, device="cpu"):
        return NPNConfig(model=model, **AUTHORS_STARTS[start], epochs=2, plastic_from=1, harden_from=2,
                         train_examples=200, val_size=100, batch_size=100, seed=seed, device=device)  # fmt: skip

    real, cache, reads = npn_train.mnist_tensors, {}, []

    def reader(name, split, root=None):  # records each read; decodes each file once
        reads.append(split)
        if split not in cache:
            x, y = real(name, split, root)
            cache[split] = (x, y) if split == "train" else (x[:300], y[:300])
        return cache[split]

    monkeypatch.setattr(reproductions, "quick_config", tiny)
    monkeypatch.setattr(npn_train, "mnist_tensors", reader)
    monkeypatch.setattr("gatelab.data.splits.mnist_tensors", reader)
    folder = run("npn-mnist", quick=True, out=tmp_path, echo=None, quiet=True)
    results = json.loads((folder / "results.json").read_text())
    keys = [f"mnist-lenet5-{s}" for s in ("expand", "prune", "dense")]
    assert sorted(results["results"]) == sorted(keys) and reads == ["train", "test"] * 3
    assert sorted(p.stem for p in (folder / "checkpoints").glob("*.pt")) == sorted(keys)
    table = {row["what"]: row for row in results["table"]}
    for label in ("expand from 3-3-3, k = 1", "prune from 20-50-500, k = 7", "dense LeNet-5"):
        row = table[f"{label}: test error (%)"]
        assert row["paper"] is None and 0 <= row["ours"] <= 100
    expand = results["results"]["mnist-lenet5-expand"]
    assert expand["log"]["stage"] == ["plastic", "hardening"] and expand["config"]["k"] == 1.0
    assert expand["config"]["expand_fill"] == reproductions.MNIST_QUICK["expand"]["expand_fill"] > 0
    assert expand["log"]["active"]["conv1"][0] in (3, 4) and expand["log"]["active"]["fc1"][0] in (48, 49)
    assert results["results"]["mnist-lenet5-dense"]["log"]["total"] == {}
    assert "100 training images held out" in results["settings"]["validation"]
    assert (folder / "active_units.png").stat().st_size > 1000


def test_a_full_mnist_run_trains_its_three_models_in_worker_processes(tmp_path, monkeypatch, capfd):
    """The full run's plumbing on tiny settings: the expanding, pruning and dense LeNet-5 in worker processes,
    each worker's epoch lines marked with its model, and their results gathered as the run's stages."""
    tiny = dict(epochs=2, plastic_from=1, harden_from=2, lr_decay_at=None, train_examples=200, val_size=100)
    starts = {start: {**settings, **tiny} for start, settings in AUTHORS_STARTS.items()}
    monkeypatch.setattr(reproductions, "AUTHORS_STARTS", starts)
    folder = run("npn-mnist", quick=False, out=tmp_path, echo=None, quiet=False)
    err = capfd.readouterr().err.splitlines()
    keys = [f"mnist-lenet5-{s}" for s in ("expand", "prune", "dense")]
    for key in keys:
        assert any(line.startswith(f"{key}: epoch    2/2") for line in err), err
    results = json.loads((folder / "results.json").read_text())
    assert results["settings"]["worker processes"] == reproductions.WORKERS == 2
    assert sorted(results["results"]) == sorted(keys) and not list(folder.glob("stages/*.worker.json"))
    expand = results["results"]["mnist-lenet5-expand"]
    assert expand["config"]["k"] == 1.0 and expand["config"]["epochs"] == 2 and expand["log"]["epoch"] == [1, 2]
    assert results["results"]["mnist-lenet5-dense"]["log"]["test_error"] is not None
