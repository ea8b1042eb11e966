"""The quick NICE reproductions run end to end and report real measurements."""

import json

import pytest

from gatelab.reproduce import run


@pytest.mark.parametrize("name", ["nice-mnist", "nice-fmnist"])
def test_quick_reproduction(name, tmp_path):
    folder = run(name, quick=True, out=tmp_path, echo=None)
    results = json.loads((folder / "results.json").read_text())
    table = {row["what"]: row["ours"] for row in results["table"]}
    assert table["classifier test accuracy (%)"] > 70
    scores = results["results"]["explanation"]["scores"]
    assert set(scores) == {"NICE", "saliency", "integrated_gradients", "occlusion", "random"}
    # every explanation, NICE's included, must beat the random control on both curves
    for name_, s in scores.items():
        if name_ != "random":
            assert s["deletion_auc"] < scores["random"]["deletion_auc"], name_
            assert s["insertion_auc"] > scores["random"]["insertion_auc"], name_
    for point in results["results"]["compression"]:
        assert point["plain_bytes"] > 0 and point["mixed_bytes"] > 0
        assert point["mixed_bytes"] <= point["plain_bytes"]  # subsampling never costs bytes
    for png in ("panels.png", "deletion_insertion.png", "tradeoff.png"):
        assert (folder / png).stat().st_size > 1000
    assert "paper" in (folder / "report.md").read_text()
