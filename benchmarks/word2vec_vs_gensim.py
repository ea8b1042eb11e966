"""gatelab's HogBatch word2vec against gensim 4.x: same corpus, hyperparameters and threads, one run.

Speed: a SYNTHETIC seeded Zipf corpus (default 20M tokens, 200k-word vocabulary, lines of 1000
tokens), written to a temporary text file that both libraries stream. Quality: Brown + PTB
(real text), both models evaluated by the same code on WS-353, SimLex-999 and the Google analogies.
Both use skip-gram, negative sampling: dim 100, window 5, negative 5, sample 1e-4, min_count 5,
alpha 0.025 -> 0.0001. Words/s are raw corpus words (before subsampling) per second of training,
vocabulary building timed apart. Usage::

    python benchmarks/word2vec_vs_gensim.py [--tokens 20000000] [--threads 2] [--skip-quality]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

HYPER = dict(vector_size=100, window=5, negative=5, sample=1e-4, min_count=5, alpha=0.025, min_alpha=0.0001)


def run_gensim(sentences, threads: int, epochs: int, seed: int):
    from gensim.models import Word2Vec as GWord2Vec

    model = GWord2Vec(sg=1, hs=0, workers=threads, epochs=epochs, seed=seed, **HYPER)
    t = time.perf_counter()
    model.build_vocab(sentences)
    t_vocab = time.perf_counter() - t
    t = time.perf_counter()
    effective, raw = model.train(sentences, total_examples=model.corpus_count, epochs=epochs)
    t_train = time.perf_counter() - t
    return model.wv, {
        "vocab": len(model.wv),
        "vocab_s": t_vocab,
        "train_s": t_train,
        "raw": raw,
        "effective": effective,
        "wps": raw / t_train,
    }


def run_gatelab(sentences, threads: int, epochs: int, seed: int):
    from gatelab.embeddings import Word2Vec

    model = Word2Vec(workers=threads, epochs=epochs, seed=seed, **HYPER)
    t = time.perf_counter()
    model.build_vocab(sentences)
    t_vocab = time.perf_counter() - t
    t = time.perf_counter()
    model.train()
    t_train = time.perf_counter() - t
    s = model.train_stats_
    model.close()
    return model.wv, {
        "vocab": len(model.wv),
        "vocab_s": t_vocab,
        "train_s": t_train,
        "raw": s["raw_words"],
        "effective": s["effective_words"],
        "wps": s["raw_words"] / t_train,
    }


def scores(kv, root) -> dict:
    from gatelab.embeddings import evaluate_all

    return {r["name"]: r for r in evaluate_all(kv, root) if "missing" not in r}


def show_speed(title, g, o):
    print(f"\n== {title}")
    print(f"{'':10} {'vocab':>7} {'vocab s':>8} {'train s':>8} {'raw words':>11} {'raw words/s':>12}")
    for name, r in (("gensim", g), ("gatelab", o)):
        print(
            f"{name:10} {r['vocab']:>7d} {r['vocab_s']:>8.1f} {r['train_s']:>8.1f} {r['raw']:>11d} {r['wps']:>12,.0f}"
        )
    print(
        f"ratio gatelab/gensim (training words/s): {o['wps'] / g['wps']:.2f}x;  "
        f"with vocabulary building: {(g['vocab_s'] + g['train_s']) / (o['vocab_s'] + o['train_s']):.2f}x"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=20_000_000, help="synthetic corpus size (tokens)")
    ap.add_argument("--vocab", type=int, default=200_000, help="synthetic vocabulary size")
    ap.add_argument("--line", type=int, default=1000, help="synthetic tokens per line")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-epochs", type=int, default=1)
    ap.add_argument("--quality-epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)

    import gensim
    import numba
    import torch

    from gatelab.data.text import BrownCorpus, ChainCorpus, LineCorpus, ZipfCorpus, ptb_corpus

    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; threads {args.threads}; python "
        f"{platform.python_version()}, torch {torch.__version__}, numba {numba.__version__}, "
        f"gensim {gensim.__version__}, numpy {np.__version__}"
    )
    print(f"hyperparameters: skip-gram, negative sampling, {HYPER}")

    if not args.skip_speed:
        with tempfile.TemporaryDirectory(prefix="w2v-bench-") as tmp:
            path = Path(tmp) / "zipf.txt"
            zipf = ZipfCorpus(args.tokens, args.vocab, args.line, seed=args.seed)
            t = time.perf_counter()
            zipf.write(path)
            print(
                f"\nspeed corpus: {zipf!r}, SYNTHETIC (no meaning: throughput only), "
                f"written in {time.perf_counter() - t:.0f}s"
            )
            from gensim.models.word2vec import LineSentence

            _, g = run_gensim(LineSentence(str(path)), args.threads, args.speed_epochs, args.seed)
            _, o = run_gatelab(LineCorpus(path), args.threads, args.speed_epochs, args.seed)
            show_speed(f"speed: synthetic Zipf, {args.speed_epochs} epoch(s), {args.threads} threads", g, o)

    if not args.skip_quality:
        corpus = ChainCorpus(BrownCorpus(root=args.data_dir), ptb_corpus("train", args.data_dir))
        print(f"\nquality corpus: Brown (lower-cased) + PTB train, {args.quality_epochs} epochs")
        gkv, g = run_gensim(corpus, args.threads, args.quality_epochs, args.seed)
        okv, o = run_gatelab(corpus, args.threads, args.quality_epochs, args.seed)
        show_speed(f"speed on Brown + PTB, {args.quality_epochs} epochs, {args.threads} threads", g, o)
        from gatelab.embeddings import KeyedVectors

        gs = scores(KeyedVectors(list(gkv.index_to_key), gkv.vectors), args.data_dir)
        os_ = scores(okv, args.data_dir)
        print("\n== quality on Brown + PTB (same evaluation code for both)")
        print(f"{'set':<18} {'metric':<9} {'gensim':>8} {'gatelab':>8} {'diff':>8} {'evaluated':>9} {'oov':>6}")
        for name in gs:
            a, b = gs[name], os_[name]
            print(
                f"{name:<18} {a['metric']:<9} {a['score']:>8.4f} {b['score']:>8.4f} {b['score'] - a['score']:>+8.4f}"
                f" {b['evaluated']:>9d} {b['oov']:>6d}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
