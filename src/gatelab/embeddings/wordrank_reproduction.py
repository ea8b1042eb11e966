"""Reproduction ``wordrank``: WordRank (rho1, rho2, rho3) against word2vec and GloVe, and a corpus-size curve.

The paper's claim in small: WordRank learns good vectors from little data, its advantage largest
when data is scarce. Every method gets the same corpus and dimension (100): WordRank on its
co-occurrence matrix (window 15, 1/d, min-count 5), our HogBatch word2vec and gensim's word2vec
(skip-gram, window 5, negative 5, sample 1e-4, 5 epochs), and GloVe from PyPI (``mittens``, the one
maintained GloVe that installs here; it trains on a dense V x V matrix, so only where V <= GLOVE_MAX_VOCAB).
WS-353, SimLex-999 and the Google analogies are read once per model, after it is trained (WordRank:
similarity on U, analogies on U + V, as the authors' ``eval.sh``); no choice is made during
training, so there is no validation split to carve.

Each (corpus, method) is one stage; WordRank stages checkpoint, so ``--resume RUN_DIR`` continues.
"""

from __future__ import annotations

import gzip
import time

import numpy as np

from gatelab.data.store import data_dir
from gatelab.errors import GatelabError
from gatelab.reproduce.registry import register

PAPER = (
    "Ji, Yun, Yanardag, Matsushima, Vishwanathan. WordRank: Learning Word Embeddings via Robust Ranking. "
    "EMNLP 2016, arXiv:1506.02761"
)
DIM = 100
GLOVE_MAX_VOCAB = 5000
CURVE = (250_000, 500_000, 1_000_000, 2_000_000)
#: the quick setting: the two smallest points of the curve, WordRank rho1 and the word2vec peers
QUICK = {"curve": CURVE[:2], "rhos": ("rho1",), "corpora": (), "wordrank_epochs": 6, "glove": False}
FULL = {"curve": CURVE, "rhos": ("rho1", "rho2", "rho3"), "corpora": ("brown+ptb", "text8"), "wordrank_epochs": 10}
FULL["glove"] = True
#: what happened to the GloVe packages on PyPI here (Python 3.11, no build network), tried in that order
GLOVE_NOTE = (
    "GloVe peers: glove-python-binary 0.2.0 has no build for Python 3.11; glove-py 0.2.3 fails to build "
    "(needs pybind11 at build time without declaring it); glove-python3 0.1.0 fails to compile (its Cython "
    "C includes longintrepr.h, gone in 3.11); glove 1.0.2 fails to build (imports numpy in setup.py); "
    "mittens 0.2 installs and runs, but its numpy GloVe is full-batch on a dense V x V matrix, so it runs "
    f"only where the vocabulary has at most {GLOVE_MAX_VOCAB} words"
)
W2V = dict(vector_size=DIM, window=5, negative=5, sample=1e-4, min_count=5, epochs=5)


class Text8Prefix:
    """The text8 prefix under the data folder (one line of words, gzip) as sentences of 1000 words."""

    def __init__(self, root=None, length: int = 1000):
        self.path = data_dir(root) / "corpora" / "text8-prefix.txt.gz"
        if not self.path.is_file():
            raise GatelabError(f"the text8 prefix is missing: put text8-prefix.txt.gz under {self.path.parent}")
        self.length = length

    def __iter__(self):
        words: list[str] = []
        rest = ""
        with gzip.open(self.path, "rt", encoding="utf-8") as fh:
            while block := fh.read(1 << 20):
                parts = (rest + block).split(" ")
                rest = parts.pop()  # may continue in the next block
                words.extend(w for w in parts if w)
                while len(words) >= self.length:
                    yield words[: self.length]
                    words = words[self.length :]
        words.extend(rest.split())
        if words:
            yield words

    def __repr__(self) -> str:
        return "text8 prefix"


def _corpus(name: str):
    from gatelab.data.text import open_corpus

    return Text8Prefix() if name == "text8" else open_corpus(name)


def _scores(kv) -> dict:
    from gatelab.embeddings.evaluate import evaluate_all

    return {r["name"]: r.get("score") for r in evaluate_all(kv)}


def wordrank_scores(model) -> dict:
    """A fitted WordRank scored as the authors' ``scripts/eval.sh`` does: word similarity on the word
    vectors U (hyperwords' ``ws_eval``), the analogies on U + V (``analogy_eval --w+c``)."""
    scores = _scores(model.wv)
    scores["Google analogies"] = _scores(model.vectors("sum"))["Google analogies"]
    return scores


def _wordrank(report, key, matrix, rho, epochs, seed) -> dict:
    from gatelab.embeddings.wordrank import WordRank

    opts = report.trainer_options(key)
    t0 = time.perf_counter()
    model = WordRank(progress=not opts["quiet"], rho=rho, epochs=epochs, vector_size=DIM, workers=2, seed=seed)
    model.fit(matrix, checkpoint=opts["checkpoint"], resume=opts["resume"], checkpoint_every=opts["checkpoint_every"])
    return {
        "scores": wordrank_scores(model),
        "seconds": time.perf_counter() - t0,
        "pairs_per_sec": model.train_stats_["pairs_per_sec"],
    }


def _word2vec(sentences, which: str, seed: int) -> dict:
    t0 = time.perf_counter()
    if which == "gensim":
        from gensim.models import Word2Vec as GensimWord2Vec

        from gatelab.embeddings.keyedvectors import KeyedVectors

        p = dict(W2V)
        model = GensimWord2Vec(sentences, sg=1, workers=2, seed=seed + 1, **p)
        kv = KeyedVectors(model.wv.index_to_key, model.wv.vectors)
    else:
        from gatelab.embeddings.word2vec import Word2Vec

        kv = Word2Vec(sentences, workers=2, seed=seed + 1, **W2V).wv
    seconds = time.perf_counter() - t0
    return {"scores": _scores(kv), "seconds": seconds, "words_per_sec": sum(map(len, sentences)) * 5 / seconds}


def _glove(matrix, seed: int) -> dict | None:
    """GloVe by ``mittens`` (dense, full-batch AdaGrad) on the same co-occurrences, word + context vectors."""
    if len(matrix.vocab) > GLOVE_MAX_VOCAB:
        return None
    try:
        from mittens import GloVe
    except ImportError:
        return None
    from gatelab.embeddings.keyedvectors import KeyedVectors

    np.random.seed(seed)
    t0 = time.perf_counter()
    vectors = GloVe(n=DIM, max_iter=100, display_progress=0).fit(matrix.to_scipy().toarray())
    return {
        "scores": _scores(KeyedVectors(matrix.vocab.words, vectors)),
        "seconds": time.perf_counter() - t0,
    }


def _cases(quick: bool) -> list[tuple[str, str, int | None]]:
    s = QUICK if quick else FULL
    return [(f"brown+ptb {n / 1e6:g}M", "brown+ptb", n) for n in s["curve"]] + [
        (name, name, None) for name in s["corpora"]
    ]


@register("wordrank", "WordRank vs word2vec and GloVe: similarity, analogies, corpus-size curve", PAPER)
def wordrank_reproduction(report, quick: bool, seed: int) -> None:
    from gatelab.embeddings.cooccurrence import count_cooccurrences, first_tokens

    s = QUICK if quick else FULL
    report.settings.update(
        {
            "dimension": DIM,
            "wordrank": f"window 15, 1/d, min-count 5, hinge, alpha 100, beta 99, x_max min(100, 100 x tokens / 17M) "
            f"(the authors' 100 on text8, scaled to the corpus), AdaGrad lr 0.05, "
            f"{s['wordrank_epochs']} epochs, xi every 2, 2 threads, word vectors U (as the authors score similarity)",
            "word2vec (ours, gensim)": "skip-gram, window 5, negative 5, sample 1e-4, 5 epochs, 2 threads",
            "glove": f"mittens {GLOVE_MAX_VOCAB if s['glove'] else 'skipped'} (dense; only vocabularies up to "
            f"{GLOVE_MAX_VOCAB} words), 100 iterations",
        }
    )
    report.note(GLOVE_NOTE if s["glove"] else "quick: GloVe skipped (mittens is dense and slow); " + GLOVE_NOTE)
    results = {}
    for label, corpus_name, max_tokens in _cases(quick):
        sentences = None

        def load(corpus_name=corpus_name, max_tokens=max_tokens):
            nonlocal sentences
            if sentences is None:
                corpus = _corpus(corpus_name)
                sentences = list(first_tokens(corpus, max_tokens) if max_tokens else corpus)
            return sentences

        matrix = None

        def counted():
            nonlocal matrix
            if matrix is None:
                matrix = count_cooccurrences(load())
            return matrix

        row = {}
        for rho in s["rhos"]:
            row[f"WordRank {rho}"] = report.stage(
                f"{label}-wordrank-{rho}",
                lambda rho=rho, label=label: _wordrank(
                    report, f"{label}-wordrank-{rho}", counted(), rho, s["wordrank_epochs"], seed
                ),
            )
        row["word2vec (ours)"] = report.stage(f"{label}-word2vec", lambda: _word2vec(load(), "ours", seed))
        row["word2vec (gensim)"] = report.stage(f"{label}-gensim", lambda: _word2vec(load(), "gensim", seed))
        if s["glove"]:
            row["GloVe (mittens)"] = report.stage(f"{label}-glove", lambda: _glove(counted(), seed))
        results[label] = row
        for method, res in row.items():
            if res is None:
                report.note(f"{label}: GloVe (mittens) skipped, the vocabulary exceeds {GLOVE_MAX_VOCAB} words")
                continue
            for metric in ("WS-353", "SimLex-999", "Google analogies"):
                report.row(f"{label}: {method}, {metric}", ours=res["scores"].get(metric))
    report.results.update(results)
    _margins(report, results)
    _plot(report, results, s)


def _margins(report, results: dict) -> None:
    """The targets: WordRank rho1 against the better word2vec on WS-353 and SimLex-999."""
    for label, row in results.items():
        wr = row.get("WordRank rho1")
        if wr is None:
            continue
        for metric in ("WS-353", "SimLex-999"):
            best = max(row[m]["scores"][metric] for m in ("word2vec (ours)", "word2vec (gensim)"))
            margin = wr["scores"][metric] - best
            report.row(
                f"{label}: WordRank rho1 minus the better word2vec, {metric}",
                ours=round(margin, 4),
                note="target > 0 (>= 0.03 at the smallest sizes)" + ("" if margin > 0 else "; missed"),
            )


def _plot(report, results: dict, s: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"brown+ptb {n / 1e6:g}M" for n in s["curve"]]
    sizes = [n / 1e6 for n in s["curve"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("WS-353", "SimLex-999")):
        for method in results[labels[0]]:
            ys = [results[lb][method]["scores"][metric] if results[lb].get(method) else np.nan for lb in labels]
            ax.plot(sizes, ys, marker="o", label=method)
        ax.set_xscale("log")
        ax.set_xlabel("training tokens (millions, Brown + PTB prefix)")
        ax.set_ylabel(f"{metric} Spearman")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    report.save_figure(fig, "learning_curve.png")
