"""The embedding reproductions: ``hogbatch`` (HogBatch word2vec against gensim) and ``wordrank`` (WordRank against
word2vec and GloVe).

``hogbatch``, in speed and quality, in one and two processes. Stages (each runs once per run folder, so
``--resume`` skips the finished ones):

- speed on a SYNTHETIC Zipf corpus (throughput only): vocabulary and training words/s, gensim
  and gatelab with the same threads;
- quality on Brown + PTB and on the text8 prefix: WS-353, SimLex-999 (Spearman) and the Google
  analogies (accuracy), gensim and gatelab trained with the same settings, evaluated by the same code;
- one process with two threads against two processes with one thread (``torchrun``, gloo) on
  Brown + PTB: end-to-end seconds of a fresh ``gatelab word2vec train`` and the same scores.

The paper reports speed on many-core Xeons and Xeon Phi and does not state figures for these
corpora, so its column stays empty. All settings follow the benchmark
(``benchmarks/word2vec_vs_gensim.py``): skip-gram, dim 100, window 5, negative 5, sample 1e-4.

``wordrank``: WordRank (rho1, rho2, rho3) against word2vec and GloVe, and a corpus-size curve. The paper's claim in
small: WordRank learns good vectors from little data, its advantage largest when data is scarce. Every method gets
the same corpus and dimension (100): WordRank on its co-occurrence matrix (window 15, 1/d, min-count 5), our
HogBatch word2vec and gensim's word2vec (the settings above, 5 epochs), and GloVe from PyPI (``mittens``, the one
maintained GloVe that installs here; it trains on a dense V x V matrix, so only where V <= GLOVE_MAX_VOCAB).
WS-353, SimLex-999 and the Google analogies are read once per model, after it is trained (WordRank: similarity on U,
analogies on U + V, as the authors' ``eval.sh``); no choice is made during training, so there is no validation split
to carve. Each (corpus, method) is one stage; WordRank stages checkpoint, so ``--resume RUN_DIR`` continues.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gatelab.data.text import BrownCorpus, ChainCorpus, LineCorpus, Text8Prefix, ZipfCorpus, open_corpus, ptb_corpus
from gatelab.embeddings.evaluate import evaluate_all
from gatelab.embeddings.keyedvectors import KeyedVectors
from gatelab.embeddings.word2vec import train_word2vec
from gatelab.errors import GatelabError
from gatelab.progress import say
from gatelab.reproduce.registry import register

HOGBATCH_PAPER = (
    "Ji, Shah, Satish, Li, Dubey. Parallelizing Word2Vec in Shared and Distributed Memory. "
    "arXiv:1604.04661 (2016); IEEE TPDS 2019"
)
HYPER = dict(vector_size=100, window=5, negative=5, sample=1e-4, min_count=5, alpha=0.025, min_alpha=0.0001)
THREADS = 2
#: --quick: a 2M-token speed corpus and one epoch; the full run: 20M tokens and five epochs
SETTINGS = {True: {"zipf_tokens": 2_000_000, "epochs": 1}, False: {"zipf_tokens": 20_000_000, "epochs": 5}}


def _scores(kv) -> dict:
    """WS-353, SimLex-999 and the Google analogies of vectors ``kv`` (None where a set could not be scored)."""
    return {r["name"]: r.get("score") for r in evaluate_all(kv)}


def _gensim(sentences, epochs: int, seed: int):
    """gensim's skip-gram with the same settings: (vectors, vocabulary seconds, training seconds, raw words)."""
    from gensim.models import Word2Vec as GensimWord2Vec

    model = GensimWord2Vec(sg=1, hs=0, workers=THREADS, epochs=epochs, seed=seed, **HYPER)
    t = time.perf_counter()
    model.build_vocab(sentences)
    vocab_s = time.perf_counter() - t
    t = time.perf_counter()
    _, raw = model.train(sentences, total_examples=model.corpus_count, epochs=epochs)
    return KeyedVectors(list(model.wv.index_to_key), model.wv.vectors), vocab_s, time.perf_counter() - t, raw


def _gatelab(report, key: str, sentences, epochs: int, seed: int):
    """Our word2vec, checkpointed under the stage's key: (vectors, vocabulary seconds, training seconds, raw words)."""
    options = report.trainer_options(key)
    t = time.perf_counter()
    model = train_word2vec(
        sentences,
        checkpoint=options["checkpoint"],
        resume=options["resume"],
        checkpoint_every=options["checkpoint_every"],
        progress=not options["quiet"],
        workers=THREADS,
        epochs=epochs,
        seed=seed,
        **HYPER,
    )
    options["checkpoint"].unlink(missing_ok=True)  # the stage's result is kept; its checkpoint is not needed
    s = model.train_stats_
    return model.wv, time.perf_counter() - t - s["seconds"], s["seconds"], s["raw_words"]


def quality_corpora(report) -> dict:
    """The real corpora of the quality stages, by name: functions that open them."""
    return {
        "Brown + PTB": lambda: ChainCorpus(BrownCorpus(), ptb_corpus("train")),
        "text8 prefix": Text8Prefix,
    }


def train_processes(corpus: str, out: Path, processes: int, epochs: int, seed: int) -> float:
    """Wall seconds of a fresh ``gatelab word2vec train`` under torchrun (or one process when ``processes == 1``)."""
    args = ["word2vec", "train", corpus, "--out", str(out), "--epochs", str(epochs), "--seed", str(seed), "--quiet"]
    args += ["--size", "100", "--window", "5", "--negative", "5", "--sample", "1e-4", "--min-count", "5"]
    if processes == 1:
        cmd = [sys.executable, "-m", "gatelab", *args, "--workers", str(THREADS)]
    else:
        launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
        cmd = [sys.executable, *launch, "-m", "gatelab", *args, "--workers", "1"]
    t = time.perf_counter()
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if done.returncode != 0:
        raise GatelabError(f"{' '.join(cmd[:8])} ... failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return time.perf_counter() - t


@register("hogbatch", "HogBatch word2vec: speed and quality against gensim, 1 vs 2 processes", HOGBATCH_PAPER)
def hogbatch(report, quick: bool, seed: int) -> None:
    cfg = SETTINGS[quick]
    epochs = cfg["epochs"]
    report.settings.update({**HYPER, "threads": THREADS, **cfg, "load_average_at_start": os.getloadavg()})
    try:
        import gensim  # noqa: F401
    except ImportError:
        gensim_ok = False
        report.note("gensim is not installed (pip install 'gatelab[test]'), so its rows are empty")
    else:
        gensim_ok = True

    def speed() -> dict:
        zipf = ZipfCorpus(cfg["zipf_tokens"], seed=seed)
        path = zipf.write(report.folder / "zipf.txt")
        result = {"load": os.getloadavg()}
        if gensim_ok:
            _, v, t, raw = _gensim(LineCorpus(path), 1, seed)
            result["gensim"] = {"vocab_s": v, "train_s": t, "raw": raw}
        _, v, t, raw = _gatelab(report, "speed", LineCorpus(path), 1, seed)
        result["gatelab"] = {"vocab_s": v, "train_s": t, "raw": raw}
        path.unlink()
        return result

    s = report.stage("speed", speed)
    ours = s["gatelab"]
    wps = ours["raw"] / ours["train_s"]
    e2e = ours["raw"] / (ours["vocab_s"] + ours["train_s"])
    note = f"SYNTHETIC Zipf, {cfg['zipf_tokens']} tokens, 1 epoch, {THREADS} threads; load {s['load'][0]:.1f}"
    if "gensim" in s:
        g = s["gensim"]
        gwps, ge2e = g["raw"] / g["train_s"], g["raw"] / (g["vocab_s"] + g["train_s"])
        report.row("training words/s", ours=wps, reference=gwps, source="gensim 4, same run", note=note)
        report.row("training speed-up over gensim", ours=wps / gwps, note="same run")
        report.row("vocabulary + training words/s", ours=e2e, reference=ge2e, source="gensim 4, same run")
    else:
        report.row("training words/s", ours=wps, note=note)
        report.row("vocabulary + training words/s", ours=e2e)
    say(f"hogbatch: speed {wps / 1e3:.0f}k words/s", quiet=report.quiet)

    for name, make in quality_corpora(report).items():
        key = "quality-" + name.split()[0].lower()

        def quality(make=make, key=key) -> dict:
            result = {"gatelab": _scores(_gatelab(report, key, make(), epochs, seed)[0])}
            if gensim_ok:
                result["gensim"] = _scores(_gensim(make(), epochs, seed)[0])
            return result

        q = report.stage(key, quality)
        for metric, score in q["gatelab"].items():
            ref = q.get("gensim", {}).get(metric)
            source = "gensim 4, same settings and evaluation" if ref is not None else ""
            report.row(f"{name}: {metric}", ours=score, reference=ref, source=source, note=f"{epochs} epoch(s)")

    def processes() -> dict:
        result = {"load": os.getloadavg()}
        for n in (1, 2):
            out = report.folder / f"vectors-{n}proc.bin"
            seconds = train_processes("brown+ptb", out, n, epochs, seed)
            result[str(n)] = {"seconds": seconds, "scores": _scores(KeyedVectors.load_word2vec_format(out))}
            out.unlink()
            out.with_name(out.name + ".json").unlink(missing_ok=True)
        return result

    p = report.stage("processes", processes)
    one, two = p["1"], p["2"]
    note = f"Brown + PTB, {epochs} epoch(s), a fresh process end to end; load {p['load'][0]:.1f}"
    report.row("end-to-end seconds, 1 process x 2 threads", ours=one["seconds"], note=note)
    report.row("end-to-end seconds, 2 processes x 1 thread", ours=two["seconds"], note="torchrun, gloo")
    for metric in one["scores"]:
        a, b = one["scores"][metric], two["scores"][metric]
        report.row(f"2 processes - 1 process: {metric}", ours=b - a, note=f"{b:.4f} vs {a:.4f}")
    report.results.update({"speed": s, "processes": p})


WORDRANK_PAPER = (
    "Ji, Yun, Yanardag, Matsushima, Vishwanathan. WordRank: Learning Word Embeddings via Robust Ranking. "
    "EMNLP 2016, arXiv:1506.02761"
)
DIM = 100
GLOVE_MAX_VOCAB = 6000  # the 0.25M-token point (5,102 words): about 5 minutes for mittens here
CURVE = (250_000, 500_000, 1_000_000, 2_000_000)
#: the quick setting: the two smallest points of the curve, WordRank rho1 and the word2vec peers; WordRank
#: trains with the library's defaults (``wordrank_epochs`` None) in both settings
QUICK = {"curve": CURVE[:2], "rhos": ("rho1",), "corpora": (), "wordrank_epochs": None, "glove": False}
FULL = {"curve": CURVE, "rhos": ("rho1", "rho2", "rho3"), "corpora": ("brown+ptb", "text8"), "wordrank_epochs": None}
FULL["glove"] = True
#: what happened to the GloVe packages on PyPI here (Python 3.11, no build network), tried in that order
GLOVE_NOTE = (
    "GloVe peers: glove-python-binary 0.2.0 has no build for Python 3.11; glove-py 0.2.3 fails to build "
    "(needs pybind11 at build time without declaring it); glove-python3 0.1.0 fails to compile (its Cython "
    "C includes longintrepr.h, gone in 3.11); glove 1.0.2 fails to build (imports numpy in setup.py); "
    "mittens 0.2 installs and runs, but its numpy GloVe is full-batch on a dense V x V matrix, so it runs "
    f"only where the vocabulary has at most {GLOVE_MAX_VOCAB} words"
)
W2V_EPOCHS = 5  # the word2vec peers of ``wordrank`` (the targets): their default length
#: a longer-trained word2vec beside them, nearer WordRank's 100 sweeps: on these small corpora it gains WS-353
W2V_LONG_EPOCHS = 20


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
    length = {} if epochs is None else {"epochs": epochs}
    model = WordRank(progress=not opts["quiet"], rho=rho, vector_size=DIM, workers=2, seed=seed, **length)
    model.fit(matrix, checkpoint=opts["checkpoint"], resume=opts["resume"], checkpoint_every=opts["checkpoint_every"])
    return {
        "scores": wordrank_scores(model),
        "seconds": time.perf_counter() - t0,
        "pairs_per_sec": model.train_stats_["pairs_per_sec"],
    }


def _word2vec(report, key: str, sentences, which: str, epochs: int, seed: int) -> dict:
    """A word2vec peer of WordRank (``ours`` or ``gensim``) with the hogbatch settings: its scores and speed."""
    t0 = time.perf_counter()
    if which == "gensim":
        kv = _gensim(sentences, epochs, seed + 1)[0]
    else:
        kv = _gatelab(report, key, sentences, epochs, seed + 1)[0]
    seconds = time.perf_counter() - t0
    words = sum(map(len, sentences)) * epochs
    return {"scores": _scores(kv), "seconds": seconds, "words_per_sec": words / seconds}


def _glove(matrix, seed: int) -> dict | None:
    """GloVe by ``mittens`` (dense, full-batch AdaGrad) on the same co-occurrences, word + context vectors."""
    if len(matrix.vocab) > GLOVE_MAX_VOCAB:
        return None
    try:
        from mittens import GloVe
    except ImportError:
        return None

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


@register("wordrank", "WordRank vs word2vec and GloVe: similarity, analogies, corpus-size curve", WORDRANK_PAPER)
def wordrank_reproduction(report, quick: bool, seed: int) -> None:
    from gatelab.embeddings.cooccurrence import count_cooccurrences, first_tokens
    from gatelab.embeddings.wordrank import WordRankConfig

    s = QUICK if quick else FULL
    d = WordRankConfig()
    report.settings.update(
        {
            "dimension": DIM,
            "wordrank": f"window 15, 1/d, min-count 5, hinge, alpha 100, beta 99, x_max min(100, 100 x tokens / 17M) "
            f"(the authors' 100 on text8, scaled to the corpus), plain SGD lr {d.lr} (the authors' step), "
            f"{s['wordrank_epochs'] or d.epochs} epochs, xi every {d.period}, 2 threads, "
            "word vectors U (as the authors score similarity)",
            "word2vec (ours, gensim)": f"skip-gram, window 5, negative 5, sample 1e-4, {W2V_EPOCHS} epochs (and ours "
            f"at {W2V_LONG_EPOCHS}), 2 threads",
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
                corpus = open_corpus(corpus_name)
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
        peers = (
            ("word2vec (ours)", "word2vec", "ours", W2V_EPOCHS),
            ("word2vec (gensim)", "gensim", "gensim", W2V_EPOCHS),
            (f"word2vec (ours, {W2V_LONG_EPOCHS} epochs)", f"word2vec-{W2V_LONG_EPOCHS}", "ours", W2V_LONG_EPOCHS),
        )
        for method, stage, which, epochs in peers:
            key = f"{label}-{stage}"
            row[method] = report.stage(key, lambda k=key, w=which, e=epochs: _word2vec(report, k, load(), w, e, seed))
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
    """The targets: WordRank rho1 against the better word2vec (5 epochs) on WS-353 and SimLex-999; and,
    as context, against our word2vec trained longer."""
    long = f"word2vec (ours, {W2V_LONG_EPOCHS} epochs)"
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
            report.row(
                f"{label}: WordRank rho1 minus {long}, {metric}",
                ours=round(wr["scores"][metric] - row[long]["scores"][metric], 4),
                note="context, not a target: word2vec given a budget nearer WordRank's",
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
        ax.set_xticks(sizes, [f"{x:g}" for x in sizes])
        ax.minorticks_off()
        ax.set_xlabel("training tokens (millions, Brown + PTB prefix)")
        ax.set_ylabel(f"{metric} Spearman")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    report.save_figure(fig, "learning_curve.png")
