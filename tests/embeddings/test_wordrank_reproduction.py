import gzip
import json
import signal

import pytest

from gatelab.checkpoint import Interrupted
from gatelab.data.text import Text8Prefix, open_corpus
from gatelab.embeddings import reproductions as repro
from gatelab.errors import GatelabError
from gatelab.reproduce import registry


def test_text8_prefix_reader_streams_fixed_length_sentences(tmp_path):
    words = [f"w{i % 37}" for i in range(2500)]
    (tmp_path / "corpora").mkdir()
    with gzip.open(tmp_path / "corpora" / "text8-prefix.txt.gz", "wt") as fh:
        fh.write(" " + " ".join(words))
    sentences = list(Text8Prefix(root=tmp_path, length=1000))
    assert [len(s) for s in sentences] == [1000, 1000, 500]
    assert sum(sentences, []) == words
    assert list(open_corpus("text8", root=tmp_path)) == sentences


def test_a_damaged_text8_prefix_is_the_library_error(tmp_path):
    (tmp_path / "corpora").mkdir()
    with gzip.open(tmp_path / "corpora" / "text8-prefix.txt.gz", "wt") as fh:
        fh.write("some words " * 10_000)
    path = tmp_path / "corpora" / "text8-prefix.txt.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(GatelabError, match="intact copy"):
        list(Text8Prefix(root=tmp_path))


@pytest.fixture
def tiny(monkeypatch, data):
    monkeypatch.setattr(
        repro,
        "QUICK",
        {"curve": (30_000,), "rhos": ("rho1",), "corpora": (), "wordrank_epochs": 1, "glove": False},
    )
    monkeypatch.setattr(repro, "W2V_EPOCHS", 1)
    monkeypatch.setattr(repro, "W2V_LONG_EPOCHS", 2)


def test_quick_reproduction_resumes_and_skips_finished_stages(tiny, tmp_path, monkeypatch):
    real = repro._word2vec

    def stop(*args):
        raise Interrupted(signal.SIGINT, None)

    monkeypatch.setattr(repro, "_word2vec", stop)
    with pytest.raises(Interrupted):
        registry.run("wordrank", quick=True, out=tmp_path, echo=None, quiet=True)
    (partial,) = tmp_path.glob(".wordrank-quick-*.partial")
    assert (partial / "stages" / "brown+ptb 0.03M-wordrank-rho1.json").is_file()

    monkeypatch.setattr(repro, "_word2vec", real)
    monkeypatch.setattr(repro, "_wordrank", lambda *a: pytest.fail("a finished stage ran again"))
    final = registry.run("wordrank", quick=True, resume=partial, echo=None, quiet=True)
    results = json.loads((final / "results.json").read_text())
    row = results["results"]["brown+ptb 0.03M"]
    assert set(row) == {"WordRank rho1", "word2vec (ours)", "word2vec (gensim)", "word2vec (ours, 2 epochs)"}
    assert all(-1 <= r["scores"]["WS-353"] <= 1 for r in row.values())
    assert (final / "learning_curve.png").is_file() and "minus the better word2vec" in (final / "report.md").read_text()
