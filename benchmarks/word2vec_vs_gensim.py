"""gatelab's HogBatch word2vec against gensim 4.x (and the authors' pWord2Vec): same corpus, settings and threads.

Speed: a SYNTHETIC seeded Zipf corpus (default 20M tokens, 200k-word vocabulary, lines of 1000
tokens), written to a temporary text file that every program streams. Quality: Brown + PTB
(real text), every model evaluated by the same code on WS-353, SimLex-999 and the Google analogies.
All use skip-gram, negative sampling: dim 100, window 5, negative 5, sample 1e-4, min_count 5,
alpha 0.025 -> 0.0001. Words/s are raw corpus words (before subsampling) per second.

Rows, all in one run with the load average beside each (the machine is shared):

- vocabulary: gatelab's compiled reader against its Python reader (the former one) and gensim's;
- training words/s: gensim, gatelab with 1 and 2 threads (the thread scaling), gatelab's torch
  backend on cpu (batched matrix products through BLAS) against the scalar numba kernel;
- end to end (a fresh ``gatelab word2vec train`` process: imports, vocabulary, training, saving):
  1 process x N threads against ``torchrun`` N processes x 1 thread, and, with ``--baseline-src``,
  the same two commands from another gatelab source tree (say, a checkout of the previous main);
- with ``--pword2vec PATH``, the authors' binary (IntelLabs/pWord2Vec) end to end on the same file,
  and its vectors in the quality table (trained on Brown + PTB written out one sentence a line).

pWord2Vec is not shipped; to build it with OpenBLAS (``apt-get install libopenblas-dev``), in a
checkout of github.com/IntelLabs/pWord2Vec: a file ``shim/mkl.h`` holding ``#include <cblas.h>``,
``#include <mm_malloc.h>``, ``void openblas_set_num_threads(int);`` and ``#define mkl_set_num_threads
openblas_set_num_threads``, then ``g++ -std=c++11 -fopenmp -O3 -march=native -D USE_MKL -I shim
-I /usr/include/x86_64-linux-gnu/openblas-pthread pWord2Vec.cpp -o pWord2Vec -lopenblas``.

Usage::

    python benchmarks/word2vec_vs_gensim.py [--tokens 20000000] [--threads 2] [--pword2vec ./pWord2Vec]
        [--baseline-src /path/to/old/src] [--skip-speed] [--skip-quality]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HYPER = dict(vector_size=100, window=5, negative=5, sample=1e-4, min_count=5, alpha=0.025, min_alpha=0.0001)
CLI_FLAGS = ["--size", "100", "--window", "5", "--negative", "5", "--sample", "1e-4", "--min-count", "5"]
CLI_FLAGS += ["--alpha", "0.025", "--min-alpha", "0.0001", "--quiet"]


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run_gensim(sentences, threads: int, epochs: int, seed: int):
    from gensim.models import Word2Vec as GWord2Vec

    model = GWord2Vec(sg=1, hs=0, workers=threads, epochs=epochs, seed=seed, **HYPER)
    t = time.perf_counter()
    model.build_vocab(sentences)
    t_vocab = time.perf_counter() - t
    t = time.perf_counter()
    _, raw = model.train(sentences, total_examples=model.corpus_count, epochs=epochs)
    return model.wv, {"vocab_s": t_vocab, "train_s": time.perf_counter() - t, "raw": raw}


def run_gatelab(sentences, threads: int, epochs: int, seed: int, **extra):
    from gatelab.embeddings import Word2Vec

    model = Word2Vec(workers=threads, epochs=epochs, seed=seed, **{**HYPER, **extra})
    t = time.perf_counter()
    model.build_vocab(sentences)
    t_vocab = time.perf_counter() - t
    t = time.perf_counter()
    model.train()
    t_train = time.perf_counter() - t
    model.close()
    return model.wv, {"vocab_s": t_vocab, "train_s": t_train, "raw": model.train_stats_["raw_words"]}


# Runs a command and prints the peak resident memory (KB) of its process tree. The wrapper is needed because
# the benchmark's own process is large: a child forked from it starts with that resident size as its high-water
# mark, and ru_maxrss keeps it across exec, so every command would report at least the benchmark's size.
PEAK_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('peak-kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def run_command(cmd, env=None, retry: bool = True) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB, of the process or its largest descendant) of a command.

    A failed command is run once more, saying so (a torchrun worker rarely aborts at exit).
    """
    t = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *map(str, cmd)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 and retry:
        print(f"(failed with status {proc.returncode}, run again: {output.strip().splitlines()[-1:]})")
        return run_command(cmd, env, retry=False)
    if proc.returncode != 0:
        raise SystemExit(f"{list(cmd)[:4]} failed ({proc.returncode}):\n{output[-3000:]}")
    peak_kb = int(proc.stdout.rsplit("peak-kb", 1)[1].split()[0])
    return seconds, peak_kb / 1024


def gensim_command(corpus, threads, epochs, seed) -> list[str]:
    """gensim end to end in a fresh process, like the others (imports, vocabulary, training, save)."""
    code = (
        "import sys; from gensim.models import Word2Vec; from gensim.models.word2vec import LineSentence; "
        f"m = Word2Vec(LineSentence(sys.argv[1]), sg=1, hs=0, workers={threads}, epochs={epochs}, seed={seed}, "
        f"**{HYPER!r}); m.wv.save_word2vec_format(sys.argv[2], binary=True)"
    )
    return [sys.executable, "-c", code, str(corpus), os.devnull]


def gatelab_command(corpus, out, threads, processes=1, epochs=1) -> list[str]:
    train = ["word2vec", "train", str(corpus), "--out", str(out), "--workers", str(threads), "--epochs", str(epochs)]
    if processes == 1:
        return [sys.executable, "-m", "gatelab", *train, *CLI_FLAGS]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    return [*launch, "-m", "gatelab", *train, *CLI_FLAGS]


def pword2vec_command(binary, corpus, out, threads, epochs=1) -> list[str]:
    """The authors' settings for these hyperparameters (batch size 2 * window + 1, as their scripts use)."""
    args = ["-train", str(corpus), "-output", str(out), "-size", "100", "-window", "5", "-negative", "5"]
    args += ["-sample", "1e-4", "-min-count", "5", "-alpha", "0.025", "-iter", str(epochs), "-threads", str(threads)]
    return [str(binary), *args, "-binary", "1", "-batch-size", "11"]


class Table:
    def __init__(self, title: str):
        print(f"\n== {title}")
        print(f"{'':44} {'seconds':>8} {'words/s':>12} {'ratio':>7}  load average")

    def row(self, name: str, seconds: float, words: int, reference: float | None = None, note: str = "") -> float:
        wps = words / seconds
        ratio = f"{wps / reference:>6.2f}x" if reference else f"{'':>7}"
        print(f"{name:44} {seconds:>8.1f} {wps:>12,.0f} {ratio}  {load()}{'  ' + note if note else ''}", flush=True)
        return wps


def speed(args, tmp: Path) -> None:
    from gatelab.data.text import LineCorpus, ZipfCorpus
    from gatelab.embeddings.vocab import EncodedCorpus

    path = tmp / "zipf.txt"
    zipf = ZipfCorpus(args.tokens, args.vocab, args.line, seed=args.seed)
    zipf.write(path)
    print(f"\nspeed corpus: {zipf!r}, SYNTHETIC (no meaning: throughput only)")
    n, th = args.tokens, args.threads

    class Lines:  # the same file through the Python reader
        def __iter__(self):
            return iter(LineCorpus(path))

    t = Table("vocabulary (count + encode), one thread; ratio against gatelab's Python reader")
    EncodedCorpus.build(LineCorpus(path), min_count=5).close()  # compile once
    s0 = time.perf_counter()
    EncodedCorpus.build(Lines(), min_count=5).close()
    py = t.row("gatelab, Python reader (the former path)", time.perf_counter() - s0, n)
    s0 = time.perf_counter()
    EncodedCorpus.build(LineCorpus(path), min_count=5).close()
    t.row("gatelab, compiled reader", time.perf_counter() - s0, n, py)

    from gensim.models.word2vec import LineSentence

    _, g = run_gensim(LineSentence(str(path)), th, 1, args.seed)
    t.row("gensim build_vocab", g["vocab_s"], n, py)

    t = Table(f"training, 1 epoch; ratio against gensim with {th} threads")
    ref = t.row(f"gensim, {th} threads", g["train_s"], g["raw"])
    _, o1 = run_gatelab(LineCorpus(path), 1, 1, args.seed)
    t.row("gatelab numba, 1 thread", o1["train_s"], o1["raw"], ref)
    _, o = run_gatelab(LineCorpus(path), th, 1, args.seed)
    t.row(f"gatelab numba, {th} threads", o["train_s"], o["raw"], ref, note=f"{th} threads / 1: see next line")
    print(f"{'':44} thread scaling 1 -> {th}: {o1['train_s'] / o['train_s']:.2f}x")

    small = tmp / "zipf-small.txt"
    ZipfCorpus(args.blas_tokens, args.vocab, args.line, seed=args.seed).write(small)
    t = Table(f"scalar kernel against BLAS (torch bmm on cpu), {args.blas_tokens} tokens, {th} threads")
    _, s = run_gatelab(LineCorpus(small), th, 1, args.seed)
    scalar = t.row("gatelab numba (scalar loops)", s["train_s"], s["raw"])
    _, b = run_gatelab(LineCorpus(small), th, 1, args.seed, backend="torch")
    t.row("gatelab torch backend, cpu (BLAS)", b["train_s"], b["raw"], scalar)

    t = Table("end to end: a fresh process (imports, vocabulary, training, save), 1 epoch; ratio against row 1")
    out = tmp / "v.bin"
    sec, mb = run_command(gatelab_command(path, out, th))
    base = t.row(f"gatelab 1 process x {th} threads", sec, n, note=f"peak {mb:.0f} MB")
    sec, mb = run_command(gatelab_command(path, out, 1, processes=th))
    t.row(f"gatelab torchrun {th} processes x 1 thread", sec, n, base, note=f"peak {mb:.0f} MB (largest process)")
    if args.baseline_src:
        env = {"PYTHONPATH": str(args.baseline_src)}
        sec, mb = run_command(gatelab_command(path, out, th), env=env)
        t.row(f"baseline src, 1 process x {th} threads", sec, n, base, note=f"peak {mb:.0f} MB; {args.baseline_src}")
        sec, mb = run_command(gatelab_command(path, out, 1, processes=th), env=env)
        t.row(f"baseline src, torchrun {th} processes x 1 thread", sec, n, base, note=f"peak {mb:.0f} MB (largest)")
    if args.pword2vec:
        sec, mb = run_command(pword2vec_command(args.pword2vec, path, out, th))
        t.row(f"pWord2Vec, {th} threads (batch 11)", sec, n, base, note=f"peak {mb:.0f} MB")
    sec, mb = run_command(gensim_command(path, th, 1, args.seed))
    t.row(f"gensim, {th} threads", sec, n, base, note=f"peak {mb:.0f} MB")


def quality(args, tmp: Path) -> None:
    from gatelab.data.text import BrownCorpus, ChainCorpus, ptb_corpus
    from gatelab.embeddings import KeyedVectors, evaluate_all

    corpus = ChainCorpus(BrownCorpus(root=args.data_dir), ptb_corpus("train", args.data_dir))
    e, th = args.quality_epochs, args.threads
    print(f"\nquality corpus: Brown (lower-cased) + PTB train, {e} epochs, {th} threads or processes")
    models = {}
    gkv, _ = run_gensim(corpus, th, e, args.seed)
    models["gensim"] = KeyedVectors(list(gkv.index_to_key), gkv.vectors)
    models["gatelab numba"], _ = run_gatelab(corpus, th, e, args.seed)
    if not args.skip_torch_quality:
        models["gatelab torch cpu"], _ = run_gatelab(corpus, th, e, args.seed, backend="torch")
    out = tmp / "q.bin"
    env = {"GATELAB_DATA": str(args.data_dir)} if args.data_dir else {}
    run_command(gatelab_command("brown+ptb", out, 1, processes=th, epochs=e) + ["--seed", str(args.seed)], env)
    models[f"gatelab {th} processes"] = KeyedVectors.load_word2vec_format(out)
    if args.pword2vec:
        text = tmp / "brown-ptb.txt"
        with open(text, "w", encoding="utf-8") as fh:
            fh.writelines(" ".join(sentence) + "\n" for sentence in corpus)
        sec, _ = run_command(pword2vec_command(args.pword2vec, text, tmp / "pw.bin", th, epochs=e))
        models["pWord2Vec"] = KeyedVectors.load_word2vec_format(tmp / "pw.bin")
        print(f"pWord2Vec on Brown + PTB, {e} epochs: {sec:.1f} s end to end (load {load()})")
    scores = {
        name: {r["name"]: r for r in evaluate_all(kv, args.data_dir) if "missing" not in r}
        for name, kv in models.items()
    }
    names = list(models)
    print(f"\n== quality on Brown + PTB (same evaluation code for all; load {load()})")
    print(f"{'set':<18} {'metric':<9}" + "".join(f" {n:>20}" for n in names) + f" {'gatelab - gensim':>17}")
    for s in scores["gensim"]:
        row = [scores[n][s]["score"] for n in names]
        print(
            f"{s:<18} {scores['gensim'][s]['metric']:<9}"
            + "".join(f" {v:>20.4f}" for v in row)
            + f" {row[1] - row[0]:>+17.4f}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=20_000_000, help="synthetic corpus size (default: %(default)s)")
    ap.add_argument("--vocab", type=int, default=200_000, help="synthetic vocabulary size (default: %(default)s)")
    ap.add_argument("--line", type=int, default=1000, help="synthetic tokens per line (default: %(default)s)")
    ap.add_argument("--blas-tokens", type=int, default=2_000_000, help="corpus of the BLAS row (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="threads, or processes (default: %(default)s)")
    ap.add_argument("--quality-epochs", type=int, default=5, help="epochs on Brown + PTB (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1, help="seed (default: %(default)s)")
    ap.add_argument("--pword2vec", type=Path, default=None, help="the authors' pWord2Vec binary (default: none)")
    ap.add_argument("--baseline-src", type=Path, default=None, help="another gatelab src folder (default: none)")
    ap.add_argument("--skip-speed", action="store_true", help="no speed rows (default: off)")
    ap.add_argument("--skip-quality", action="store_true", help="no quality rows (default: off)")
    ap.add_argument(
        "--skip-torch-quality", action="store_true", help="no quality row for the torch backend (default: off)"
    )
    ap.add_argument("--data-dir", default=None, help="data folder (default: $GATELAB_DATA)")
    args = ap.parse_args(argv)

    import gensim
    import numba
    import torch

    cpus = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    per_core = next(
        (line.split(":")[1].strip() for line in cpus.splitlines() if line.startswith("Thread(s) per core")), "?"
    )
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus ({per_core} thread(s) per core), load average "
        f"{load()}; threads {args.threads}; python {platform.python_version()}, torch {torch.__version__}, "
        f"numba {numba.__version__}, gensim {gensim.__version__}, numpy {np.__version__}"
    )
    print(f"hyperparameters: skip-gram, negative sampling, {HYPER}")
    with tempfile.TemporaryDirectory(prefix="w2v-bench-") as tmp:
        if not args.skip_speed:
            speed(args, Path(tmp))
        if not args.skip_quality:
            quality(args, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
