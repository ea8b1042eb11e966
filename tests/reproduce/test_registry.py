"""The reproduction registry and the report every run writes."""

import json

import matplotlib.pyplot as plt
import pytest

from gatelab.errors import GatelabError
from gatelab.reproduce import available, register, registry, run


@pytest.fixture
def toy():
    @register("toy-run", "A toy reproduction", "Nobody, 2026")
    def toy_run(report, quick, seed):
        report.row("answer", 42, 41.5, "close")
        report.settings["quick"] = quick
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        report.save_figure(fig, "line.png")

    yield
    del registry._REGISTRY["toy-run"]


def test_run_writes_report_json_and_plots(tmp_path, toy, capsys):
    folder = run("toy-run", quick=True, out=tmp_path, seed=3)
    assert folder.name.startswith("toy-run-quick-")
    assert sorted(p.name for p in folder.iterdir()) == ["line.png", "report.md", "results.json"]
    report = (folder / "report.md").read_text()
    assert "| answer | 42 | 41.5 | close |" in report and "Wall time" in report and "torch" in report
    results = json.loads((folder / "results.json").read_text())
    assert results["seed"] == 3 and results["table"][0]["paper"] == 42
    assert "| answer | 42 | 41.5 |" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*partial"))
    second = run("toy-run", quick=True, out=tmp_path, echo=None)
    assert second != folder  # every run gets a fresh folder


def test_failed_run_leaves_no_finished_folder(tmp_path):
    @register("broken-run", "Fails", "n/a")
    def broken(report, quick, seed):
        raise RuntimeError("boom")

    try:
        with pytest.raises(RuntimeError):
            run("broken-run", out=tmp_path, echo=None)
        assert [p.name.startswith(".") for p in tmp_path.iterdir()] == [True]
    finally:
        del registry._REGISTRY["broken-run"]


def test_registry_lists_the_papers_and_rejects_unknown_names():
    names = available()
    assert {"l0arm-mlp", "l0arm-lenet5"} <= set(names)
    with pytest.raises(GatelabError, match="accepted: .*l0arm-mlp"):
        run("nope")
