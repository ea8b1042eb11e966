"""The activity reproductions' plumbing on tiny settings: every model a stage, the test split read once, resume."""

import json

import pytest

import gatelab.activity.protocols as protocols
import gatelab.activity.reproductions as reproductions
from gatelab.checkpoint import Interrupted
from gatelab.reproduce import run

TINY = {
    "subsets": ["AS1"],
    "curve": ["AS1"],
    "fractions": [0.25, 1.0],
    "ablation": [0.25],
    "model": {"epochs": 1, "hidden": 8, "layers": 2, "frames": 8},
    "stgcn_channels": [8, 8],
}


@pytest.fixture
def reads(monkeypatch):
    monkeypatch.setattr(reproductions, "QUICK", TINY)
    events, load = [], protocols.load_split

    def recording(dataset, part, *a, **kw):
        events.append(part)
        return load(dataset, part, *a, **kw)

    monkeypatch.setattr(reproductions, "load_split", recording)
    return events


def test_msr3d_quick_trains_every_model_then_reads_the_test_split_once_and_resumes(tmp_path, monkeypatch, reads):
    fit, calls = reproductions.train, []

    def stopping(*a, **kw):
        calls.append(kw["desc"])
        if len(calls) == 3:
            raise Interrupted(15, None)
        return fit(*a, **kw)

    with monkeypatch.context() as m:
        m.setattr(reproductions, "train", stopping)
        with pytest.raises(Interrupted):
            run("activity-msr3d", quick=True, out=tmp_path, echo=None)
    (work,) = tmp_path.iterdir()
    assert len(list((work / "stages").glob("AS1-*.json"))) == 2
    reads.clear()
    folder = run("activity-msr3d", quick=True, out=tmp_path, resume=work, echo=None)
    plan = reproductions._plan(TINY, 0)
    assert reads == ["train"] * (len(plan) - 2) + ["test"]  # finished stages skipped; test read once, last
    results = json.loads((folder / "results.json").read_text())
    assert set(results["results"]["scores"]) == set(plan)
    rows = {r["what"]: r for r in results["table"]}
    assert 0 <= rows["AS1: BLSTM + aids, accuracy (%)"]["ours"] <= 100
    assert "25% labels: with aids / without (%)" in rows
    assert all(r["paper"] is None for r in results["table"])
    for png in ("confusion.png", "limited_labels.png"):
        assert (folder / png).stat().st_size > 1000
