import json

import numpy as np
import pytest

from gatelab.cli import main
from gatelab.data.text import BrownCorpus, LineCorpus, ZipfCorpus, open_corpus, ptb_corpus
from gatelab.embeddings import KeyedVectors
from gatelab.errors import GatelabError

from .conftest import planted_sentences


def test_ptb_and_brown_readers(data):
    assert sum(len(s) for s in ptb_corpus("valid")) == 70390
    first = next(iter(BrownCorpus()))
    assert first[:4] == ["the", "fulton", "county", "grand"]
    assert sum(len(s) for s in BrownCorpus(categories=("ca",))) > 80000


def test_brown_full_token_count(data):
    assert sum(len(s) for s in BrownCorpus()) == 1161192


def test_zipf_is_seeded_and_zipfian(tmp_path):
    a = list(ZipfCorpus(20000, 500, 100, seed=1))
    assert a == list(ZipfCorpus(20000, 500, 100, seed=1))
    assert a != list(ZipfCorpus(20000, 500, 100, seed=2))
    assert len(a) == 200 and all(len(s) == 100 for s in a)
    counts = np.bincount([int(w[1:]) for s in a for w in s], minlength=500)
    assert 1.6 < counts[0] / counts[1] < 2.4  # p(rank r) ~ 1/r
    path = ZipfCorpus(2000, 50, 100, seed=1).write(tmp_path / "z.txt")
    assert list(LineCorpus(path)) == list(ZipfCorpus(2000, 50, 100, seed=1))
    assert "synthetic" in repr(ZipfCorpus(10, 5)) and ZipfCorpus.synthetic


def test_open_corpus_errors():
    with pytest.raises(GatelabError, match="neither a file"):
        open_corpus("no-such-corpus")
    with pytest.raises(GatelabError, match="zipf:N_TOKENS"):
        open_corpus("zipf:many")
    with pytest.raises(GatelabError, match="out of range"):
        open_corpus("zipf:1e30")
    with pytest.raises(GatelabError, match="unknown PTB split"):
        ptb_corpus("dev")


class Scalars:
    """Stands for progress.ScalarLog (TensorBoard, seconds to import): records what it is given."""

    logged = []

    def __init__(self, log_dir):
        self.log_dir = log_dir

    def add(self, step, **scalars):
        self.logged.append((self.log_dir, step, scalars))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_cli_train_and_eval(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setattr("gatelab.embeddings.word2vec.ScalarLog", Scalars)
    sents, _ = planted_sentences(n_sentences=500)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(" ".join(s) for s in sents) + "\n")
    out = tmp_path / "v.txt"
    assert (
        main(
            [
                "word2vec",
                "train",
                str(corpus),
                "--out",
                str(out),
                "--text",
                "--min-count",
                "1",
                "--size",
                "12",
                "--epochs",
                "1",
                "--workers",
                "1",
                "--seed",
                "3",
                "--log-dir",
                str(tmp_path / "logs"),
            ]
        )
        == 0
    )
    assert "word2vec epoch 1/1: 6000 words" in capsys.readouterr().err  # one line an epoch
    ((log_dir, step, scalars),) = Scalars.logged
    assert log_dir == str(tmp_path / "logs") and step == 6000 and set(scalars) == {"words_per_sec", "lr"}
    assert scalars["lr"] == pytest.approx(0.0001) and scalars["words_per_sec"] > 0
    assert KeyedVectors.load_word2vec_format(out, binary=False).vector_size == 12
    meta = json.loads((tmp_path / "v.txt.json").read_text())
    assert meta["config"]["vector_size"] == 12 and meta["train"]["raw_words"] == 500 * 12
    capsys.readouterr()
    assert main(["word2vec", "eval", str(out)]) == 0
    table = capsys.readouterr().out
    assert "WS-353" in table and "SimLex-999" in table and "Google analogies" in table


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.bin"
    bad.write_text("not a vectors file\n")
    assert main(["word2vec", "eval", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gatelab: error:") and err.count("\n") == 1
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["word2vec", "train", str(empty), "--out", str(tmp_path / "o.bin"), "--quiet"]) == 2
    assert "corpus is empty" in capsys.readouterr().err
    assert not (tmp_path / "o.bin").exists()
    assert not (tmp_path / "o.bin.work").exists()  # no encoded corpus left behind


@pytest.mark.parametrize(
    "option", [["--window", "0"], ["--threads", "0"], ["--workers", "-2"], ["--alpha", "nan"], ["--backend", "gpu"]]
)
def test_cli_refuses_impossible_options(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as info:
        main(["word2vec", "train", "corpus.txt", "--out", str(tmp_path / "o.bin"), *option])
    assert info.value.code == 2 and option[0] in capsys.readouterr().err


def test_more_negatives_than_words(tmp_path):
    """Noise words repeat with multiplicities, so --negative may exceed the vocabulary (gensim allows it too)."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c d\n" * 10)
    out = tmp_path / "o.bin"
    assert main(["word2vec", "train", str(corpus), "--out", str(out), "--negative", "1000", "--quiet"]) == 0
    kv = KeyedVectors.load_word2vec_format(out)
    assert len(kv) == 4 and np.isfinite(kv.vectors).all()


def test_out_is_checked_before_training(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    assert main(["word2vec", "train", "no-such-corpus", "--out", str(tmp_path / "folder")]) == 2
    assert "is an existing folder" in capsys.readouterr().err
