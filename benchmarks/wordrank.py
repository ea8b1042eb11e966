"""WordRank against our HogBatch word2vec, gensim's word2vec and GloVe (mittens), side by side in one run.

On one real corpus (default: the first 0.5M tokens of Brown + PTB; ``--tokens 0`` for all of it,
or ``--corpus text8`` for the text8 prefix), every method trains vectors of dimension 100 with the
same threads and is evaluated by the same code on WS-353, SimLex-999 and the Google analogies.
Throughput is end to end: WordRank's co-occurrence counting plus training, in (w, c) pair updates
per second, against the word2vec peers' raw corpus words per second (vocabulary plus training).
GloVe is ``mittens`` (dense V x V, full-batch), run only when the vocabulary has at most
``--glove-max-vocab`` words. Prints the load average, since the machine is shared. Usage::

    python benchmarks/wordrank.py [--tokens 500000] [--threads 2] [--epochs N] [--corpus brown+ptb|text8]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def scores(kv) -> dict:
    from gatelab.embeddings.evaluate import evaluate_all

    return {r["name"]: r.get("score") for r in evaluate_all(kv)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="brown+ptb", choices=("brown+ptb", "text8"), help="(default: brown+ptb)")
    ap.add_argument("--tokens", type=int, default=500_000, help="corpus prefix in tokens, 0 for all (default: 500000)")
    ap.add_argument("--threads", type=int, default=2, help="threads of every method (default: 2)")
    ap.add_argument("--epochs", type=int, default=None, help="WordRank epochs (default: the library's)")
    ap.add_argument("--glove-max-vocab", type=int, default=6000, help="largest vocabulary for mittens (default: 6000)")
    ap.add_argument("--seed", type=int, default=1, help="(default: 1)")
    args = ap.parse_args()

    import numba
    import torch

    from gatelab.data.text import open_corpus
    from gatelab.embeddings.cooccurrence import count_cooccurrences, first_tokens
    from gatelab.embeddings.keyedvectors import KeyedVectors
    from gatelab.embeddings.reproductions import HYPER, W2V_EPOCHS, wordrank_scores
    from gatelab.embeddings.word2vec import Word2Vec
    from gatelab.embeddings.wordrank import WordRank

    corpus = open_corpus(args.corpus)
    sentences = list(first_tokens(corpus, args.tokens) if args.tokens else corpus)
    n_words = sum(map(len, sentences))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"numba {numba.__version__}; threads {args.threads}; corpus {corpus!r}, {n_words} tokens"
    )
    rows = []

    t0 = time.perf_counter()
    matrix = count_cooccurrences(sentences)
    t_count = time.perf_counter() - t0
    length = {} if args.epochs is None else {"epochs": args.epochs}
    model = WordRank(workers=args.threads, seed=args.seed, **length).fit(matrix)
    t_all = time.perf_counter() - t0
    s = model.train_stats_
    rows.append(
        (
            "WordRank rho1 (gatelab)",
            wordrank_scores(model),
            f"{s['updates'] / t_all / 1e6:.2f}M pairs/s end to end "
            f"({matrix.nnz} nonzeros x {model.config.epochs} epochs; "
            f"counting {t_count:.1f}s, training {s['pairs_per_sec'] / 1e6:.2f}M pairs/s)",
            t_all,
        )
    )

    t0 = time.perf_counter()
    w2v = Word2Vec(sentences, workers=args.threads, seed=args.seed, epochs=W2V_EPOCHS, **HYPER)
    t = time.perf_counter() - t0
    rows.append(("word2vec (gatelab HogBatch)", scores(w2v.wv), f"{n_words * W2V_EPOCHS / t / 1e3:.0f}k words/s", t))

    from gensim.models import Word2Vec as GensimWord2Vec

    t0 = time.perf_counter()
    g = GensimWord2Vec(sentences, sg=1, workers=args.threads, seed=args.seed, epochs=W2V_EPOCHS, **HYPER)
    t = time.perf_counter() - t0
    rows.append(
        (
            "word2vec (gensim)",
            scores(KeyedVectors(g.wv.index_to_key, g.wv.vectors)),
            f"{n_words * W2V_EPOCHS / t / 1e3:.0f}k words/s",
            t,
        )
    )

    if len(matrix.vocab) <= args.glove_max_vocab:
        try:
            from mittens import GloVe
        except ImportError:
            GloVe = None
        if GloVe is not None:
            np.random.seed(args.seed)
            t0 = time.perf_counter()
            vectors = GloVe(n=100, max_iter=100, display_progress=0).fit(matrix.to_scipy().toarray())
            t = time.perf_counter() - t0
            rows.append(
                (
                    "GloVe (mittens 0.2, dense)",
                    scores(KeyedVectors(matrix.vocab.words, vectors)),
                    f"{matrix.nnz * 100 / t / 1e6:.2f}M nonzeros x iterations/s",
                    t_count + t,
                )
            )
    else:
        print(f"GloVe (mittens): skipped, a vocabulary of {len(matrix.vocab)} words needs a dense V x V matrix")

    base = rows[1][3]
    print(f"\n{'method':<30} {'WS-353':>7} {'SimLex':>7} {'analogy':>8} {'seconds':>8} {'time/ours-w2v':>14}  speed")
    for name, sc, speed, t in rows:
        print(
            f"{name:<30} {sc['WS-353']:>7.3f} {sc['SimLex-999']:>7.3f} {sc['Google analogies']:>8.3f} "
            f"{t:>8.1f} {t / base:>14.2f}  {speed}"
        )
    with open("/proc/loadavg") as fh:
        print(f"\nload average: {fh.read().strip()}")


if __name__ == "__main__":
    main()
