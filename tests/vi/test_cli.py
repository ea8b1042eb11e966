"""The vi commands: outputs, bad input as one line with exit 2, the test split scored once after the fit,
and a run killed by SIGKILL that resumes from its intact checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from gatelab.checkpoint import load_state
from gatelab.cli import main
from gatelab.data.bow import write_docword
from gatelab.vi import LDAVI, synthetic_lda


@pytest.fixture(scope="module")
def docword(tmp_path_factory):
    corpus, _ = synthetic_lda(n_docs=200, n_words=60, n_topics=4, doc_length=40, seed=12)
    path = tmp_path_factory.mktemp("corpus") / "docword.toy.txt"
    write_docword(corpus, path)
    path.with_name("vocab.toy.txt").write_text("".join(f"w{i}\n" for i in range(60)))
    return path


def test_lda_writes_its_outputs_and_scores_the_test_split_once_after_fitting(docword, tmp_path, monkeypatch):
    events = []
    fit, perplexity = LDAVI.fit, LDAVI.perplexity
    monkeypatch.setattr(LDAVI, "fit", lambda self, *a, **k: events.append("fit") or fit(self, *a, **k))
    monkeypatch.setattr(
        LDAVI, "perplexity", lambda self, X, **k: events.append(("test", X.n_docs)) or perplexity(self, X)
    )
    out = tmp_path / "run"
    code = main(["vi", "lda", str(docword), "--topics", "4", "--iterations", "3", "--out", str(out), "--quiet"])
    assert code == 0 and events == ["fit", ("test", 20)]  # 10% of 200 documents, read once, after the fit
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["splits"] == {"documents": 200, "train_shard": 171, "validation": 9, "test": 20}
    assert len(json.loads((out / "history.json").read_text())) == 3 and (out / "history.png").stat().st_size > 0
    assert (out / "topics.txt").read_text().startswith("topic 0: w")
    assert LDAVI.load(out / "model.pt").components_.shape == (4, 60)


def test_gmm_command_fits_iris(tmp_path):
    out = tmp_path / "iris"
    data = os.environ["GATELAB_DATA"] + "/gmm/iris.csv"
    assert main(["vi", "gmm", data, "--components", "3", "--algorithm", "batch", "--out", str(out), "--quiet"]) == 0
    components = json.loads((out / "components.json").read_text())
    assert components["features"][0] == "sepal_length" and len(components["means"]) == 3


@pytest.mark.parametrize(
    "content, extra, says",
    [
        ("", [], "empty"),
        ("40\n3\n2\n1 1 1\n2 two 1\n", [], "integers"),
        ("40\n3\n2\n1 1 1\n2 9 1\n", [], "word ids in [1, 3]"),
        (None, ["--topics", "500"], "larger than the"),
        (None, ["--topics", "0"], "expected an integer"),
        (None, ["--kappa", "0.2"], "kappa"),
        (None, ["--algorithm", "gibbs"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(docword, tmp_path, capsys, content, extra, says):
    path = docword
    if content is not None:
        path = tmp_path / "docword.bad.txt"
        path.write_text(content)
    try:
        code = main(["vi", "lda", str(path), "--out", str(tmp_path / "o"), "--quiet", "--iterations", "1", *extra])
    except SystemExit as exc:  # argparse refuses a bad option value before the command runs
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0] and says in err[0], err


def test_nan_in_mixture_data_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\nnan,3\n4,5\n")
    assert main(["vi", "gmm", str(path), "--components", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN" in err[0]


def test_sigkill_then_resume_finishes_from_the_intact_checkpoint(docword, tmp_path):
    out = tmp_path / "run"
    ckpt = tmp_path / "run.checkpoint.pt"
    cmd = [sys.executable, "-m", "gatelab", "vi", "lda", str(docword), "--topics", "4", "--algorithm", "batch"]
    cmd += ["--iterations", "40", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while not ckpt.exists() or load_state(ckpt)["run"]["iteration"] < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = load_state(ckpt)["run"]["iteration"]  # intact after the kill
    assert 2 <= saved < 40
    done = subprocess.run([*cmd, "--resume", str(ckpt)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    first = next(line for line in done.stderr.splitlines() if "iteration" in line)
    assert int(first.split("iteration ")[1].split("/")[0]) == saved + 1, first  # starts where the checkpoint was
    assert json.loads((out / "metrics.json").read_text())["config"]["max_iter"] == 40
    assert torch.load(out / "model.pt", weights_only=True)["params"]["n_topics"] == 4
