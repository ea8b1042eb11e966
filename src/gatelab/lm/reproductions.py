"""Reproduction ``blackout-ptb``: full softmax, BlackOut and NCE on PTB with the same model, K and epochs."""

from __future__ import annotations

import dataclasses
import time

import torch

from gatelab.lm.corpus import load_corpus
from gatelab.lm.train import LMConfig, evaluate, train, unigram_perplexity
from gatelab.reproduce.registry import register

PAPER = (
    "Ji, Vishwanathan, Satish, Anderson, Dubey. BlackOut: Speeding up Recurrent Neural Network "
    "Language Models With Very Large Vocabularies. ICLR 2016, arXiv:1511.06909"
)

# The authors' C++ (IntelLabs/rnnlm) on a 2-core machine, PTB, sigmoid RNN with hidden 128, batch 32,
# BPTT 20, K=100, alpha=0.4, as quoted in gatelab's issue 5 for orientation.
REFERENCE = {"blackout_test_ppl_2_epochs": 370.6, "blackout_words_per_s": 50_000, "softmax_words_per_s": 2_600}


def _prefix(ids: torch.Tensor, n: int) -> torch.Tensor:
    """The first whole sentences of an encoded text, about ``n`` words."""
    ends = torch.nonzero(ids[n:] == 0).flatten()
    return ids[: n + int(ends[0]) + 1] if ends.numel() else ids


@register("blackout-ptb", "BlackOut vs full softmax vs NCE on Penn Treebank", PAPER)
def blackout_ptb(report, quick: bool, seed: int) -> None:
    # One intra-op thread: on a shared, loaded machine more threads only contend (and it keeps runs deterministic).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(report, quick, seed)
    finally:
        torch.set_num_threads(before)


def _run(report, quick: bool, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpus = load_corpus("ptb")
    if quick:  # evaluate on the first ~25k words of valid and test (whole sentences): exact evaluation is costly
        corpus.valid, corpus.test = _prefix(corpus.valid, 25_000), _prefix(corpus.test, 25_000)
    base = LMConfig(
        loss="blackout", samples=100, alpha=0.4, cell="rnn", hidden=128, batch_size=32, bptt=20, epochs=2, seed=seed
    )
    if quick:  # a 250k-word prefix, one epoch, a smaller model: about a minute on a loaded 2-core machine
        base = dataclasses.replace(base, hidden=64, epochs=1, max_train_words=250_000, samples=50)
    report.settings.update({k: v for k, v in dataclasses.asdict(base).items() if k != "loss"})
    report.settings["torch_threads"] = torch.get_num_threads()
    report.settings["perplexity"] = (
        "exact full softmax on the test split"
        + (" (first 25k words)" if quick else "")
        + ", every target counted (</s> and PTB's literal <unk> included)"
    )
    uni = unigram_perplexity(corpus.vocab, corpus.test)
    results = {}
    for loss in ("softmax", "blackout", "nce"):
        cfg = dataclasses.replace(base, loss=loss)
        start = time.perf_counter()
        model, history = train(corpus, cfg)
        seconds = time.perf_counter() - start
        test = evaluate(model, corpus.test, unk_id=corpus.vocab.unk_id)
        words = sum(h["words"] for h in history)
        train_s = sum(h["seconds"] for h in history)
        results[loss] = {
            "test_ppl": test["ppl"],
            "valid_ppl": [h.get("valid_ppl") for h in history],
            "words_per_s": words / train_s,
            "seconds": seconds,
            "history": history,
        }
    report.results.update({"unigram_test_ppl": uni, "runs": results, "reference": REFERENCE})

    epochs = base.epochs
    sm, bo, nce = (results[k]["test_ppl"] for k in ("softmax", "blackout", "nce"))
    ref_note = "" if not quick else "quick: 250k training words, 1 epoch, hidden 64, K=50; first 25k test words"
    report.row(f"full softmax test ppl ({epochs} ep.)", None, sm, ref_note)
    report.row(
        f"BlackOut test ppl ({epochs} ep.)",
        None if quick else REFERENCE["blackout_test_ppl_2_epochs"],
        bo,
        "" if quick else "reference: authors' C++, as quoted in the issue",
    )
    report.row(f"NCE test ppl ({epochs} ep.)", None, nce, f"same K={base.samples}, alpha={base.alpha}")
    report.row("unigram test ppl", None, uni, "the bar every model must clear")
    report.row("BlackOut / full softmax ppl", None, bo / sm, "target: <= 1.05")
    report.row("BlackOut / NCE ppl", None, bo / nce, "target: <= 1.00")
    for loss, ref in (
        ("softmax", REFERENCE["softmax_words_per_s"]),
        ("blackout", REFERENCE["blackout_words_per_s"]),
        ("nce", None),
    ):
        report.row(
            f"{loss} training words/s",
            None if quick else ref,
            results[loss]["words_per_s"],
            "shared, loaded 2-core machine",
        )
    report.note("Perplexities are exact (full softmax over all words) whatever the training loss.")
    report.note(
        f"BlackOut is {'within' if bo <= 1.05 * sm else 'NOT within'} 5% of full softmax "
        f"({bo:.1f} vs {sm:.1f}) and {'at least as good as' if bo <= nce else 'worse than'} NCE ({nce:.1f})."
    )
    if not quick:
        report.note(
            "The paper reference (370.6 after 2 epochs, 50k vs 2.6k words/s) is the authors' C++ on a "
            "2-core machine as quoted in the issue; timings here were taken on a shared, loaded machine."
        )

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for loss, r in results.items():
        ax.plot(
            range(1, len(r["valid_ppl"]) + 1), r["valid_ppl"], marker="o", label=f"{loss} (test {r['test_ppl']:.0f})"
        )
    ax.axhline(unigram_perplexity(corpus.vocab, corpus.valid), color="gray", ls="--", label="unigram")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation perplexity")
    ax.set_title("PTB, sigmoid RNN" + (" (quick)" if quick else ""))
    ax.legend()
    report.save_figure(fig, "valid_ppl.png")
