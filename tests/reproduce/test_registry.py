"""The reproduction registry and the report every run writes."""

import json
import signal

import matplotlib.pyplot as plt
import pytest

from gatelab.checkpoint import Interrupted
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
    assert sorted(p.name for p in folder.iterdir()) == ["line.png", "report.md", "results.json", "run.json"]
    report = (folder / "report.md").read_text()
    assert "| answer | 42 | – | 41.5 | close |" in report and "Wall time" in report and "torch" in report
    results = json.loads((folder / "results.json").read_text())
    assert results["seed"] == 3 and results["table"][0]["paper"] == 42
    assert "| answer | 42 | – | 41.5 |" in capsys.readouterr().out
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


def test_an_interrupted_run_resumes_skipping_finished_stages(tmp_path):
    calls, attempts = [], []

    @register("two-stage", "Two stages", "n/a")
    def two_stage(report, quick, seed):
        attempts.append(1)
        first = report.stage("first", lambda: calls.append("first") or {"error": 1.5})
        if len(attempts) == 1:
            raise Interrupted(signal.SIGTERM, report.checkpoint("second"))
        second = report.stage("second", lambda: calls.append("second") or 2.5)
        report.row("error", None, first["error"] + second, reference=4.0, source="Someone et al., Table 1")

    try:
        with pytest.raises(Interrupted) as info:
            run("two-stage", out=tmp_path, seed=5, echo=None)
        (partial,) = tmp_path.glob(".two-stage-*.partial")
        assert info.value.hint == f"resume with: gatelab reproduce two-stage --seed 5 --resume {partial}"
        with pytest.raises(GatelabError, match="resume it with those settings"):
            run("two-stage", out=tmp_path, seed=6, resume=partial, echo=None)
        folder = run("two-stage", out=tmp_path, seed=5, resume=partial, echo=None)
        assert calls == ["first", "second"]  # the finished stage ran once
        assert not partial.exists() and folder.name == partial.name[1:].removesuffix(".partial")
        row = json.loads((folder / "results.json").read_text())["table"][0]
        assert (row["paper"], row["reference"], row["ours"]) == (None, 4.0, 4.0)
        assert "| error | – | 4 (Someone et al., Table 1) | 4 |" in (folder / "report.md").read_text()
    finally:
        del registry._REGISTRY["two-stage"]


def test_set_changes_declared_settings_and_a_resume_needs_the_same(tmp_path):
    quick = {"models": ("D",), "images": 10, "rate": 0.5, "fresh": True, "limit": 3}
    full = {"models": ("A", "B"), "images": None, "rate": 0.1, "fresh": False, "limit": None}
    seen, attempts = [], []

    @register("set-run", "Settings a user may change", "n/a", settings=(quick, full))
    def set_run(report, quick_run, seed):
        s = {**(quick if quick_run else full), **report.overrides}
        seen.append(s)
        attempts.append(1)
        if len(attempts) == 1:
            raise Interrupted(signal.SIGTERM, report.checkpoint("only"))
        report.row("images", None, s["images"])

    try:
        changes = ["models=B, A", "images=7", "rate=2e-3", "fresh=yes", "limit=none"]
        with pytest.raises(Interrupted) as info:
            run("set-run", out=tmp_path, echo=None, overrides=changes)
        assert seen[0] == {"models": ("B", "A"), "images": 7, "rate": 0.002, "fresh": True, "limit": None}
        (partial,) = tmp_path.glob(".set-run-*.partial")
        saved = json.loads((partial / "run.json").read_text())["set"]
        assert saved == {"models": "B,A", "images": "7", "rate": "0.002", "fresh": "true", "limit": "none"}
        hint = "gatelab reproduce set-run --seed 0 --set models=B,A --set images=7 --set rate=0.002 --set fresh=true"
        assert info.value.hint == f"resume with: {hint} --set limit=none --resume {partial}"
        with pytest.raises(GatelabError, match="--set images=7 .*--resume"):  # the saved changes, named
            run("set-run", out=tmp_path, resume=partial, echo=None, overrides=changes[1:])
        folder = run("set-run", out=tmp_path, resume=partial, echo=None, overrides=changes)
        assert seen[1] == seen[0]
        assert (
            "- changed with --set: models=B,A images=7 rate=0.002 fresh=true limit=none"
            in (folder / "report.md").read_text()
        )
        assert json.loads((folder / "results.json").read_text())["overrides"]["images"] == 7
        assert run("set-run", quick=True, out=tmp_path, echo=None) and seen[-1] == quick  # no --set: unchanged

        refusals = {
            "colour=red": "no setting 'colour'; give KEY=VALUE, KEY one of: models, images, rate, fresh, limit",
            "images": "--set 'images': no '=' in it; give KEY=VALUE",
            "images=-1": "images takes a whole number >= 0 or none",
            "rate=fast": "rate takes a finite number \\(defaults: quick 0.5, full 0.1\\)",
            "rate=nan": "rate takes a finite number",
            "fresh=maybe": "fresh takes true or false",
            "models=A,E": "distinct items among A, B, D",
            "models=A,A": "distinct items",
            "models=": "a comma-separated list",
        }
        for item, message in refusals.items():
            with pytest.raises(GatelabError, match=message):
                run("set-run", out=tmp_path / "refused", echo=None, overrides=[item])
        assert not (tmp_path / "refused").exists()  # refused before any folder is made
        with pytest.raises(GatelabError, match="'npn-mnist' takes no --set settings"):
            run("npn-mnist", out=tmp_path / "refused", echo=None, overrides=["epochs=1"])
    finally:
        del registry._REGISTRY["set-run"]
