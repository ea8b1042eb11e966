"""The quick L0-ARM reproductions run end to end and report the paper beside ours."""

import json

import pytest

from gatelab.reproduce import run


@pytest.mark.parametrize("name,paper_arch", [("l0arm-mlp", "219-214-100"), ("l0arm-lenet5", "20-25-45-462")])
def test_quick_reproduction(tmp_path, name, paper_arch):
    folder = run(name, quick=True, out=tmp_path, echo=None)
    results = json.loads((folder / "results.json").read_text())
    table = {row["what"]: row for row in results["table"]}
    assert table["L0-ARM: kept architecture"]["paper"] == paper_arch
    for method in ("arm", "hard_concrete"):
        error = results["results"][method]["history"]["test_error"][-1]
        assert 0 <= error < 50  # it learned something in the quick run
    model_name = name.split("-")[1]
    assert (folder / f"{model_name}-arm.safetensors").is_file()  # `gatelab gates summary` reads it
    assert (folder / "training.png").stat().st_size > 1000
    assert (folder / "architecture.png").stat().st_size > 1000
    assert "paper" in (folder / "report.md").read_text()
