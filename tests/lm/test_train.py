"""Training on real text, saving and loading, the CLI, and clear errors for bad input."""

import importlib
import json

import pytest
import torch

from gatelab.cli import main
from gatelab.errors import GatelabError
from gatelab.lm.corpus import encode_sentences, load_corpus
from gatelab.lm.output import BlackOut
from gatelab.lm.train import LMConfig, build_model, evaluate, load_model, save_model, train, unigram_perplexity
from gatelab.lm.vocab import Vocab

TINY = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat is on the log"] * 30


@pytest.fixture
def tiny_text(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(TINY) + "\n")
    return path


def test_short_ptb_run_beats_unigram_by_far(ptb_available):
    corpus = load_corpus("ptb")
    config = LMConfig(loss="blackout", samples=50, alpha=0.4, hidden=64, epochs=1, max_train_words=300_000, seed=0)
    model, history = train(corpus, config)
    unigram = unigram_perplexity(corpus.vocab, corpus.valid)
    ppl = history[-1]["valid_ppl"]
    assert 640 < unigram < 730
    assert ppl < 0.8 * unigram, (ppl, unigram)
    # evaluation in parallel streams equals evaluation one sentence at a time
    sents = [s.split() for s in open(ptb_available / "ptb" / "ptb.valid.txt").read().splitlines()[:40] if s.strip()]
    ids = encode_sentences(sents, corpus.vocab)
    whole = evaluate(model, ids, batch_size=7)
    one_by_one = sum(evaluate(model, encode_sentences([s], corpus.vocab), batch_size=1)["nll"] for s in sents)
    assert whole["nll"] == pytest.approx(one_by_one, rel=1e-5)
    without_unk = evaluate(model, ids, include_unk=False)
    assert without_unk["words"] < whole["words"]


@pytest.mark.parametrize("loss", ["softmax", "blackout", "nce", "is"])
def test_every_loss_trains_and_round_trips(loss, tiny_text, tmp_path):
    corpus = load_corpus(str(tiny_text), valid=str(tiny_text))
    cfg = LMConfig(loss=loss, samples=5, hidden=16, epochs=3, batch_size=4, bptt=8, lr=0.02, seed=1)
    model, history = train(corpus, cfg)
    assert history[-1]["valid_ppl"] < history[0]["valid_ppl"] or history[-1]["valid_ppl"] < 8
    save_model(model, corpus.vocab, cfg, tmp_path / "m")
    again, vocab, cfg2 = load_model(tmp_path / "m", vocab=corpus.vocab)
    assert vocab == corpus.vocab and cfg2.loss == loss
    assert evaluate(again, corpus.valid)["ppl"] == pytest.approx(evaluate(model, corpus.valid)["ppl"], rel=1e-6)


def test_lstm_option_trains(tiny_text):
    corpus = load_corpus(str(tiny_text), valid=str(tiny_text))
    model, history = train(
        corpus,
        LMConfig(loss="blackout", cell="lstm", samples=5, hidden=16, embed=12, epochs=2, batch_size=4, bptt=8, lr=0.02),
    )
    assert history[-1]["valid_ppl"] < len(corpus.vocab)


def test_bad_hyperparameters_are_clear_errors(tiny_text):
    corpus = load_corpus(str(tiny_text))
    V = len(corpus.vocab)
    with pytest.raises(GatelabError, match="larger than the vocabulary"):
        train(corpus, LMConfig(samples=V + 1))
    with pytest.raises(GatelabError, match="between 1 and the vocabulary"):
        BlackOut(V, 4, corpus.vocab.counts_tensor(), samples=V + 1)
    for alpha in (-0.1, 1.5):
        with pytest.raises(GatelabError, match=r"alpha must be in \[0, 1\]"):
            train(corpus, LMConfig(alpha=alpha))
        with pytest.raises(GatelabError, match=r"alpha must lie in \[0, 1\]"):
            BlackOut(V, 4, corpus.vocab.counts_tensor(), samples=3, alpha=alpha)
    with pytest.raises(GatelabError, match="unknown loss"):
        LMConfig(loss="hsoftmax").validate()


def test_checkpoint_vocabulary_mismatch_is_refused(tiny_text, tmp_path):
    corpus = load_corpus(str(tiny_text))
    cfg = LMConfig(samples=3, hidden=8, epochs=1)
    model = build_model(corpus.vocab, cfg)
    save_model(model, corpus.vocab, cfg, tmp_path / "m")
    other = Vocab.build([s.split() for s in TINY] + [["zebra", "zebra"]])
    with pytest.raises(GatelabError, match="vocabulary mismatch"):
        load_model(tmp_path / "m", vocab=other)
    # a vocab.json swapped under the weights is caught too
    other.save(tmp_path / "m" / "vocab.json")
    with pytest.raises(GatelabError, match="does not match"):
        load_model(tmp_path / "m")
    with pytest.raises(GatelabError, match="not a gatelab language model"):
        load_model(tmp_path / "nothing")


def test_cli_train_eval_sample(tiny_text, tmp_path, capsys):
    out = tmp_path / "model"
    rc = main(
        [
            "lm",
            "train",
            str(tiny_text),
            "--valid",
            str(tiny_text),
            "--out",
            str(out),
            "--loss",
            "blackout",
            "--samples",
            "5",
            "--alpha",
            "0.4",
            "--hidden",
            "16",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--bptt",
            "8",
            "--quiet",
        ]
    )
    assert rc == 0
    assert (out / "model.safetensors").is_file() and json.loads((out / "config.json").read_text())["config"][
        "samples"
    ] == 5
    assert "valid perplexity" in capsys.readouterr().out
    assert main(["lm", "eval", str(out), str(tiny_text)]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["lm", "sample", str(out), "--words", "12", "--prime", "the"]) == 0
    text = capsys.readouterr().out.split()
    assert text[0] == "the" and set(text) <= set(" ".join(TINY).split())


def test_cli_bad_input_is_one_line_and_exit_2(tiny_text, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    model = ["lm", "train", str(tiny_text), "--out", str(tmp_path / "x")]
    cases = [
        ["lm", "train", str(empty), "--out", str(tmp_path / "x")],
        model + ["--samples", "100000"],
        model + ["--alpha", "2"],
        model + ["--epochs", "0"],
        model + ["--lr-decay", "-1"],
        model + ["--lr", "nan"],
        model + ["--samples", "0"],
        model + ["--val-size", "0"],
        model + ["--test", str(tmp_path / "missing.txt")],
        model + ["--device", "tpu"],
        ["lm", "train", str(tiny_text), "--out", str(a_file)],  # --out is a file: refused before training
        ["lm", "sample", str(tmp_path / "x"), "--words", "0"],
        ["lm", "sample", str(tmp_path / "x"), "--temperature", "-1"],
        ["lm", "eval", str(tmp_path / "nothing"), str(tiny_text)],
    ]
    for argv in cases:
        try:
            rc = main(argv)
        except SystemExit as exc:  # refused by the argument parser
            rc = exc.code
        assert rc == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("gatelab") and "error:" in err and "\n" not in err, (argv, err)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.checkpoint.pt").exists()


def test_cli_failure_leaves_no_output_folder(tiny_text, tmp_path, monkeypatch):
    def half_then_fail(model, vocab, config, folder, extra=None):
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(importlib.import_module("gatelab.lm.train"), "save_model", half_then_fail)
    argv = ["lm", "train", str(tiny_text), "--out", str(tmp_path / "m"), "--hidden", "8", "--samples", "3"]
    assert main(argv + ["--epochs", "1", "--quiet"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.checkpoint.pt", "tiny.txt"]  # kept for --resume


def test_validation_is_carved_from_training_text_with_a_seed(tiny_text):
    lines = [f"w{i} w{i + 1} common" for i in range(200)]
    tiny_text.write_text("\n".join(lines) + "\n")
    corpus = load_corpus(str(tiny_text), val_size=0.1, seed=4)
    assert corpus.vocab.counts[0] == 180  # the vocabulary counts the 180 training sentences only
    assert corpus.valid.eq(0).sum() == 20 + 1 and "20 of the 200 sentences" in corpus.valid_source
    valid_words = {corpus.vocab.words[i] for i in corpus.valid.tolist()}
    train_words = {corpus.vocab.words[i] for i in corpus.train.tolist()}
    assert train_words | valid_words >= {"common", "</s>"}
    again = load_corpus(str(tiny_text), val_size=0.1, seed=4)
    assert torch.equal(again.valid, corpus.valid) and torch.equal(again.train, corpus.train)
    assert not torch.equal(load_corpus(str(tiny_text), val_size=0.1, seed=5).valid, corpus.valid)
    assert load_corpus(str(tiny_text), read_test=False, test=str(tiny_text)).test is None
