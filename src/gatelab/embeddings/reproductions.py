"""Reproduction ``hogbatch``: HogBatch word2vec against gensim, in speed and quality, in one and two processes.

Stages (each runs once per run folder, so ``--resume`` skips the finished ones):

- speed on a SYNTHETIC Zipf corpus (throughput only): vocabulary and training words/s, gensim
  and gatelab with the same threads;
- quality on Brown + PTB and on the text8 prefix: WS-353, SimLex-999 (Spearman) and the Google
  analogies (accuracy), gensim and gatelab trained with the same settings, evaluated by the same code;
- one process with two threads against two processes with one thread (``torchrun``, gloo) on
  Brown + PTB: end-to-end seconds of a fresh ``gatelab word2vec train`` and the same scores.

The paper reports speed on many-core Xeons and Xeon Phi and does not state figures for these
corpora, so its column stays empty. All settings follow the benchmark
(``benchmarks/word2vec_vs_gensim.py``): skip-gram, dim 100, window 5, negative 5, sample 1e-4.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gatelab.data.store import data_dir
from gatelab.data.text import BrownCorpus, ChainCorpus, LineCorpus, ZipfCorpus, ptb_corpus
from gatelab.embeddings.evaluate import evaluate_all
from gatelab.embeddings.keyedvectors import KeyedVectors
from gatelab.embeddings.word2vec import train_word2vec
from gatelab.errors import GatelabError
from gatelab.files import atomic_path
from gatelab.progress import say
from gatelab.reproduce.registry import register

PAPER = (
    "Ji, Shah, Satish, Li, Dubey. Parallelizing Word2Vec in Shared and Distributed Memory. "
    "arXiv:1604.04661 (2016); IEEE TPDS 2019"
)
HYPER = dict(vector_size=100, window=5, negative=5, sample=1e-4, min_count=5, alpha=0.025, min_alpha=0.0001)
THREADS = 2
#: --quick: a 2M-token speed corpus and one epoch; the full run: 20M tokens and five epochs
SETTINGS = {True: {"zipf_tokens": 2_000_000, "epochs": 1}, False: {"zipf_tokens": 20_000_000, "epochs": 5}}
TEXT8 = "corpora/text8-prefix.txt.gz"


def _scores(kv) -> dict:
    return {r["name"]: r["score"] for r in evaluate_all(kv) if "missing" not in r}


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


def _text8(report) -> Path:
    """The text8 prefix, decompressed once into the run folder (LineCorpus reads plain text)."""
    source = data_dir() / TEXT8
    if not source.is_file():
        raise GatelabError(f"the text8 prefix {source} is missing; put {TEXT8} under the data folder")
    target = report.folder / "text8-prefix.txt"
    if not target.is_file():
        with atomic_path(target) as tmp, gzip.open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return target


def quality_corpora(report) -> dict:
    """The real corpora of the quality stages, by name: functions that open them."""
    return {
        "Brown + PTB": lambda: ChainCorpus(BrownCorpus(), ptb_corpus("train")),
        "text8 prefix": lambda: LineCorpus(_text8(report)),
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


@register("hogbatch", "HogBatch word2vec: speed and quality against gensim, 1 vs 2 processes", PAPER)
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

    (report.folder / "text8-prefix.txt").unlink(missing_ok=True)

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
