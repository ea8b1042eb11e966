"""The esvi-kos and esvi-gmm reproductions' plumbing on tiny settings: every method a stage, the report's
rows and plots, the test split scored only after each fit, and a resumed run that reuses finished stages."""

import importlib
import json
import shutil

import pytest
import torch

from gatelab.data.bow import write_docword
from gatelab.reproduce import run
from gatelab.vi import LDAVI, synthetic_lda

repro = importlib.import_module("gatelab.vi.reproductions")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A tiny KOS stand-in and tiny settings; torchrun runs and the peers (multi-process pools, slow to start)
    replaced by stand-ins: the command under torchrun is tested in test_distributed, the peers by the benchmarks."""
    corpus, _ = synthetic_lda(n_docs=120, n_words=40, n_topics=3, doc_length=30, seed=1)
    write_docword(corpus, tmp_path / "data" / "kos" / "docword.kos.txt")
    (tmp_path / "data" / "gmm").mkdir(parents=True)
    for name in ("geyser.csv", "iris.csv"):
        shutil.copy(repro.data_dir() / "gmm" / name, tmp_path / "data" / "gmm" / name)
    monkeypatch.setenv("GATELAB_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(repro, "KOS_QUICK", {"topics": 3, "passes": 2, "local_iter": 1, "workers": 2})
    monkeypatch.setattr(
        repro, "SCALING_QUICK", {"n_docs": 60, "n_words": 30, "n_topics": 4, "doc_length": 20, "rounds": 2}
    )
    monkeypatch.setattr(repro, "REAL_ITERATIONS", 5)
    monkeypatch.setattr(repro, "GMM_QUICK", {"n": 600, "components": 3, "dim": 2, "iterations": 3, "workers": 2})
    events = []

    def fake_torchrun(command, nproc):
        events.append(("torchrun", command[1], nproc))
        hist = [{"iteration": 1, "time": 1.0 / nproc, "perplexity": 50.0, "loglik": -3.0}]
        timing = {"compute_seconds": 2.0 / nproc, "message_seconds": 0.01 * (nproc - 1), "messages": 8 * (nproc - 1)}
        metrics = {"test_perplexity": 50.0, "test_loglik_per_point": -3.0, "elbo": -1.0, "fit_seconds": 2.0 / nproc}
        return hist, {**metrics, "timing": timing}

    perplexity = LDAVI.perplexity

    def recorded(self, X, **kw):
        events.append(("score", X.n_docs, hasattr(self, "history_")))
        return perplexity(self, X, **kw)

    def fake_peer(train, val, k, workers, passes, seed):
        events.append(("peer", k))
        return [{"iteration": 1, "time": 1.0, "perplexity": 40.0}], torch.rand(k, train.n_words) + 0.1

    def fake_gmm_peer(train, val, k, iterations, seed):
        from sklearn.mixture import BayesianGaussianMixture

        model = BayesianGaussianMixture(n_components=k, covariance_type="diag", max_iter=5, random_state=0)
        return [{"iteration": 1, "time": 1.0, "loglik": -3.0}], model.fit(train.numpy())

    monkeypatch.setattr(repro, "torchrun_fit", fake_torchrun)
    monkeypatch.setattr(repro, "gensim_lda", fake_peer)
    monkeypatch.setattr(repro, "sklearn_lda", fake_peer)
    monkeypatch.setattr(repro, "sklearn_gmm", fake_gmm_peer)
    monkeypatch.setattr(LDAVI, "perplexity", recorded)
    return events


def test_esvi_kos_quick_plumbing(tiny, tmp_path):
    folder = run("esvi-kos", quick=True, out=tmp_path / "runs", echo=None)
    results = json.loads((folder / "results.json").read_text())
    runs = results["results"]["runs"]
    assert set(runs) >= {"gensim LdaMulticore", "sklearn online LDA", "batch", "svi", "esvi (1 proc)"}
    assert "esvi-incremental (2 proc)" in runs and ("torchrun", "lda", 2) in tiny
    assert all(len(r["history"]) >= 1 and r["test"] > 1 for r in runs.values())
    model = results["results"]["cost_model"]  # compute 1 s a round (2 rounds), 1.25 ms a message
    assert model["predicted_speedup"]["4"] == pytest.approx(1.0 / (1.0 / 4 + 8 * 0.00125))
    assert (folder / "curves.png").is_file() and (folder / "scaling.png").is_file()
    assert all(r["paper"] is None for r in results["table"])
    # the test split (12 documents) is scored only by fitted models of ours (peers' topics are scored through
    # LDAVI.from_components, which has no history), and every score of a model of ours follows its fit
    test_scores = [e for e in tiny if e[0] == "score" and e[1] == 12]
    assert len(test_scores) == 6


def test_esvi_gmm_quick_plumbing_and_resume(tiny, tmp_path, monkeypatch):
    folder = run("esvi-gmm", quick=True, out=tmp_path / "runs", echo=None)
    table = json.loads((folder / "results.json").read_text())["table"]
    geyser = next(r for r in table if r["what"].startswith("geyser"))
    assert geyser["ours"] > -5 and geyser["reference"] > -5 and "scikit-learn" in geyser["reference_source"]
    assert {("torchrun", "gmm", 1), ("torchrun", "gmm", 2)} <= set(tiny)
    # a resumed run skips the finished stages: make the folder look unfinished and rerun it
    partial = folder.with_name(f".{folder.name}.partial")
    folder.rename(partial)
    (partial / "report.md").unlink()
    tiny.clear()
    monkeypatch.setattr(repro, "sklearn_gmm", lambda *a, **k: pytest.fail("a finished stage ran again"))
    run("esvi-gmm", quick=True, resume=partial, echo=None)
    assert not [e for e in tiny if e[0] == "torchrun"]
