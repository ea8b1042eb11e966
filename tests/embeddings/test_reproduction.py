"""Plumbing of ``gatelab reproduce hogbatch`` on tiny settings: every stage runs, the table is filled, resume skips."""

import json

from gatelab.embeddings import reproductions, train_word2vec
from gatelab.reproduce import run

from .conftest import planted_sentences


def test_hogbatch_reproduction_runs_on_tiny_settings(tmp_path, monkeypatch):
    sents, _ = planted_sentences(n_sentences=300)
    monkeypatch.setitem(reproductions.SETTINGS, True, {"zipf_tokens": 20_000, "epochs": 1})
    monkeypatch.setattr(reproductions, "HYPER", {**reproductions.HYPER, "vector_size": 8, "min_count": 1})
    monkeypatch.setattr(reproductions, "quality_corpora", lambda report: {"Planted": lambda: sents})
    launched = []

    def in_process(corpus, out, processes, epochs, seed):  # stands for a fresh `gatelab word2vec train` process
        launched.append((corpus, processes))
        train_word2vec(sents, out=out, workers=1, epochs=epochs, seed=seed, min_count=1, vector_size=8)
        return 1.0 + processes

    monkeypatch.setattr(reproductions, "train_processes", in_process)
    folder = run("hogbatch", quick=True, out=tmp_path, seed=1, quiet=True, echo=None)
    assert launched == [("brown+ptb", 1), ("brown+ptb", 2)]
    results = json.loads((folder / "results.json").read_text())
    rows = {r["what"]: r for r in results["table"]}
    assert rows["training words/s"]["ours"] > 0 and rows["training words/s"]["reference"] > 0  # gensim beside us
    assert rows["end-to-end seconds, 2 processes x 1 thread"]["ours"] == 3.0
    assert all(r["paper"] is None for r in rows.values())  # the paper states no figure for these corpora
    assert any(w.startswith("Planted: ") for w in rows) and results["settings"]["zipf_tokens"] == 20_000
    assert not list(folder.glob("*.txt")) and not list(folder.glob("*.bin"))  # the corpora and vectors are gone
    assert not list(folder.glob("checkpoints/*.pt"))  # and so are the checkpoints of finished stages
