"""Loading a binary word2vec file: gatelab's KeyedVectors.load_word2vec_format against gensim's, one run.

The file is SYNTHETIC: ``--words`` words (``w0, w1, ...`` plus a few non-ASCII ones) with vectors
drawn from a seeded standard normal (``--seed``), ``--dim`` float32 numbers each, written in
word2vec.c's binary format to a temporary folder. The page cache is warmed by reading the file once;
then each loader runs ``--repeats`` times, interleaved, and the best time of each is reported with
the ratio, after checking that both loaded the same words and the same vectors. Usage::

    python benchmarks/keyedvectors_load.py [--words 1000000] [--dim 100] [--repeats 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def write_file(path: Path, n: int, dim: int, seed: int) -> Path:
    from gatelab.embeddings import KeyedVectors

    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(n)]
    for i, w in enumerate(["naïve", "Québec", "東京", "straße"][: max(0, n - 1)]):
        words[1 + i] = w
    return KeyedVectors(words, rng.standard_normal((n, dim), dtype=np.float32)).save_word2vec_format(path, binary=True)


def load_gensim(path: Path):
    from gensim.models import KeyedVectors as GKeyedVectors

    return GKeyedVectors.load_word2vec_format(str(path), binary=True)


def load_gatelab(path: Path):
    from gatelab.embeddings import KeyedVectors

    return KeyedVectors.load_word2vec_format(path, binary=True)


def machine() -> str:
    import gensim
    import torch

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.platform()}; {os.cpu_count()} cores; load average {load}; python {platform.python_version()}; "
        f"torch {torch.__version__}, numpy {np.__version__}, gensim {gensim.__version__}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=None, help="where to write the temporary file (default: the system's)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "vectors.bin"
        t = time.perf_counter()
        write_file(path, args.words, args.dim, args.seed)
        print(
            f"SYNTHETIC file: {args.words} words x {args.dim} float32 (seed {args.seed}), "
            f"{path.stat().st_size / 2**20:.0f} MiB, written in {time.perf_counter() - t:.1f} s"
        )
        with open(path, "rb") as fh:  # warm the page cache so that neither loader pays for the disk
            while fh.read(1 << 24):
                pass
        times = {"gensim": [], "gatelab": []}
        loaders = {"gensim": load_gensim, "gatelab": load_gatelab}
        first = {}
        print(f"before: {machine()}")
        for r in range(args.repeats):
            order = ("gensim", "gatelab") if r % 2 == 0 else ("gatelab", "gensim")
            for name in order:
                gc.collect()
                t = time.perf_counter()
                kv = loaders[name](path)
                times[name].append(time.perf_counter() - t)
                if name not in first:
                    first[name] = kv
                del kv
        g, ours = first["gensim"], first["gatelab"]
        same_words = list(g.index_to_key) == ours.index_to_key
        same_vectors = g.vectors.shape == ours.vectors.shape and np.array_equal(g.vectors, ours.vectors)
        print(f"after:  {machine()}")
    tg, to = min(times["gensim"]), min(times["gatelab"])
    print(f"same words: {same_words}; same vectors (bit for bit): {same_vectors}")
    print(f"gensim  {tg:7.2f} s   (runs: {', '.join(f'{x:.2f}' for x in times['gensim'])})")
    print(f"gatelab {to:7.2f} s   (runs: {', '.join(f'{x:.2f}' for x in times['gatelab'])})")
    print(f"ratio gensim/gatelab: {tg / to:.2f}x ({'gatelab faster' if to < tg else 'gensim faster'})")
    return 0 if same_words and same_vectors else 1


if __name__ == "__main__":
    raise SystemExit(main())
