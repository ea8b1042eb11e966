"""The quick NPN reproductions run end to end."""

import json

from gatelab.reproduce import run


def test_quick_moons_grows_and_prunes_to_similar_sizes(tmp_path):
    folder = run("npn-moons", quick=True, out=tmp_path, echo=None)
    results = json.loads((folder / "results.json").read_text())
    sizes = {mode: sum(v[-1] for v in results["results"][mode]["active"].values()) for mode in ("expansion", "pruning")}
    assert sizes["expansion"] > 6 and sizes["pruning"] < 180  # one grew, the other shrank
    for mode in ("expansion", "pruning"):
        assert results["results"][mode]["val_error"][-1] < 5
    for png in ("active_units.png", "transition_rate.png", "decision_boundaries.png"):
        assert (folder / png).stat().st_size > 1000


def test_quick_mnist(tmp_path):
    folder = run("npn-mnist", quick=True, out=tmp_path, echo=None)
    table = {row["what"]: row["ours"] for row in json.loads((folder / "results.json").read_text())["table"]}
    assert table["mlp, prune from 100%: test error (%)"] < 30
    assert "lenet5, expand from 10%: architecture" in table
