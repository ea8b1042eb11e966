"""Word2Vec (skip-gram, negative sampling) trained the HogBatch way.

Ji, Shah, Satish, Li, Dubey, "Parallelizing Word2Vec in Shared and Distributed Memory"
(arXiv:1604.04661, 1611.06172): the context words of a window share one draw of noise words,
so each update is a few small matrix-matrix products; threads update the shared matrices
without locks; processes train on shards of the corpus and average their models now and
then, the frequent words (the first rows of the frequency-sorted vocabulary) more often.

Typical use::

    model = Word2Vec(LineCorpus("corpus.txt"), vector_size=100, window=5, workers=2)
    model.wv.most_similar("king")
    model.wv.save_word2vec_format("vectors.bin", binary=True)
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from gatelab.embeddings.keyedvectors import KeyedVectors
from gatelab.embeddings.vocab import EncodedCorpus, Vocab
from gatelab.errors import GatelabError, check_choice


@dataclass
class Word2VecConfig:
    """Hyperparameters; names and defaults follow gensim's ``Word2Vec`` (skip-gram, negative sampling).

    ``batch_size`` is the paper's: the most context words that share one draw of noise words
    (None: all ``2 * window`` of a window, as in the authors' default). ``chunk_words`` is the
    size of the unit of work a thread takes. ``sync_every`` (rounds of ``4 * workers`` chunks),
    ``min_sync_words`` and ``full_sync_times`` set the distributed model synchronisation: every
    sync averages the first ``min_sync_words`` rows, every 2nd sync twice as many, every 4th four
    times as many, ... (the authors' schedule), plus ``full_sync_times`` full averages spread over
    training and one at the end.
    """

    vector_size: int = 100
    window: int = 5
    negative: int = 5
    sample: float = 1e-3
    min_count: int = 5
    epochs: int = 5
    alpha: float = 0.025
    min_alpha: float = 0.0001
    workers: int = 3
    batch_size: int | None = None
    seed: int = 1
    max_vocab_size: int | None = None
    max_sentence_length: int = 10000
    chunk_words: int = 20000
    device: str = "cpu"
    backend: str = "auto"
    windows_per_step: int = 2048
    sync_every: int = 1
    min_sync_words: int = 1024
    full_sync_times: int = 0

    def validate(self) -> "Word2VecConfig":
        def need(cond, what):
            if not cond:
                raise GatelabError(what)

        need(self.vector_size >= 1, f"vector_size must be >= 1, got {self.vector_size}")
        need(self.window >= 1, f"window must be >= 1, got {self.window}")
        need(self.negative >= 1, f"negative must be >= 1 (only negative sampling is implemented), got {self.negative}")
        need(self.sample >= 0, f"sample must be >= 0, got {self.sample}")
        need(self.min_count >= 1, f"min_count must be >= 1, got {self.min_count}")
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(
            self.alpha > 0 and self.min_alpha >= 0,
            f"alpha must be > 0 and min_alpha >= 0, got {self.alpha}, {self.min_alpha}",
        )
        need(self.workers >= 1, f"workers must be >= 1, got {self.workers}")
        need(self.batch_size is None or self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(
            self.max_sentence_length >= 1 and self.chunk_words >= 1, "max_sentence_length and chunk_words must be >= 1"
        )
        need(self.windows_per_step >= 1, f"windows_per_step must be >= 1, got {self.windows_per_step}")
        need(
            self.sync_every >= 1 and self.min_sync_words >= 1 and self.full_sync_times >= 0,
            "sync_every and min_sync_words must be >= 1, full_sync_times >= 0",
        )
        check_choice("backend", self.backend, ("auto", "numba", "torch"))
        if self.device != "cpu" and self.backend == "numba":
            raise GatelabError(f"the numba backend runs on cpu only; device {self.device!r} needs backend 'torch'")
        return self

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size if self.batch_size is not None else 2 * self.window

    @property
    def effective_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "numba" if self.device == "cpu" else "torch"


def _as_sentences(sentences):
    if isinstance(sentences, (str, os.PathLike)):
        from gatelab.data.text import LineCorpus

        return LineCorpus(sentences)
    return sentences


def _dist():
    """torch.distributed if a process group with more than one process is up, else None."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def _trailing_zeros(v: int) -> int:
    return (v & -v).bit_length() - 1


class Word2Vec:
    """Skip-gram with negative sampling, HogBatch style, with gensim's parameters.

    ``sentences`` is any iterable of token lists (read once, streaming: the vocabulary is
    counted while the corpus is encoded to a temporary int32 file that the epochs then read
    by memory map) or a path to a text file with one sentence a line; given here, the model is
    trained at once. Under a ``torch.distributed``
    process group of several processes (``torchrun``), each process trains on its shard and
    the models are averaged as described in :class:`Word2VecConfig`; after training all
    processes hold the same vectors.

    Fitted attributes: ``wv`` (:class:`KeyedVectors`), ``syn1neg`` (output matrix), ``vocab``,
    ``train_stats_`` (raw and effective words, seconds, raw words per second).
    """

    def __init__(
        self, sentences: Iterable[Iterable[str]] | str | os.PathLike | None = None, progress: bool = False, **params
    ):
        unknown = set(params) - {f.name for f in dataclasses.fields(Word2VecConfig)}
        if unknown:
            raise GatelabError(
                f"unknown Word2Vec parameter(s) {sorted(unknown)}; accepted: "
                f"{', '.join(f.name for f in dataclasses.fields(Word2VecConfig))}"
            )
        self.config = Word2VecConfig(**params).validate()
        self.progress = progress
        self.corpus: EncodedCorpus | None = None
        self.vocab: Vocab | None = None
        self.wv: KeyedVectors | None = None
        self.syn1neg: np.ndarray | None = None
        self.train_stats_: dict = {}
        if sentences is not None:
            self.build_vocab(sentences)
            self.train()

    # --- vocabulary ----------------------------------------------------------------------
    def build_vocab(self, sentences, workdir: str | os.PathLike | None = None) -> "Word2Vec":
        """Read the corpus once: count, sort and prune the vocabulary, encode the corpus."""
        cfg = self.config
        if self.corpus is not None:
            self.corpus.close()
        self.corpus = EncodedCorpus.build(
            _as_sentences(sentences),
            min_count=cfg.min_count,
            max_vocab_size=cfg.max_vocab_size,
            max_sentence_length=cfg.max_sentence_length,
            chunk_words=cfg.chunk_words,
            workdir=workdir,
        )
        self.vocab = self.corpus.vocab
        rng = np.random.default_rng(cfg.seed)
        v, d = len(self.vocab), cfg.vector_size
        w_in = ((rng.random((v, d), dtype=np.float32) - 0.5) / d).astype(np.float32)
        self.wv = KeyedVectors(self.vocab.words, w_in, self.vocab.counts)
        self.syn1neg = np.zeros((v, d), dtype=np.float32)
        dist = _dist()
        if dist is not None:
            import torch

            check = torch.tensor([v, -v, self.corpus.n_words, -self.corpus.n_words], dtype=torch.int64)
            dist.all_reduce(check, op=dist.ReduceOp.MAX)
            if int(check[0]) != v or int(-check[1]) != v or int(check[2]) != int(-check[3]):
                raise GatelabError(
                    "the processes read different corpora (vocabulary or word counts differ); "
                    "every process must see the same corpus"
                )
        return self

    # --- training ------------------------------------------------------------------------
    def train(self, epochs: int | None = None) -> "Word2Vec":
        """Train for ``epochs`` (default: the configured number) passes over the corpus."""
        if self.corpus is None:
            raise GatelabError("build_vocab (or pass sentences to Word2Vec) before train")
        cfg = self.config
        epochs = cfg.epochs if epochs is None else epochs
        if epochs < 1:
            raise GatelabError(f"epochs must be >= 1, got {epochs}")
        corpus, vocab = self.corpus, self.vocab
        keep = vocab.keep_probabilities(cfg.sample)
        table = vocab.noise_table()
        w_in, w_out = self.wv.vectors, self.syn1neg
        dist = _dist()
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)

        n = corpus.n_chunks
        lo, hi = rank * n // world, (rank + 1) * n // world
        my_chunks = list(range(lo, hi))
        shard_tokens = max(int(corpus.chunks[hi] - corpus.chunks[lo]), 1)
        round_size = 4 * cfg.workers
        rounds_per_epoch = max(-(-((k + 1) * n // world - k * n // world) // round_size) for k in range(world))
        rounds_per_epoch = max(rounds_per_epoch, 1)
        shard_words_est = corpus.n_words * (hi - lo) / max(n, 1)

        backend = cfg.effective_backend
        if backend == "numba":
            from gatelab.embeddings._kernel import train_chunk

            def run(k, a0, a1, seed):
                return train_chunk(
                    corpus.chunk(k),
                    w_in,
                    w_out,
                    keep,
                    table,
                    cfg.window,
                    cfg.negative,
                    cfg.effective_batch_size,
                    a0,
                    a1,
                    seed,
                    cfg.max_sentence_length,
                )

            tensors = None
            if dist is not None:
                import torch

                tensors = (torch.from_numpy(w_in), torch.from_numpy(w_out))
        else:
            from gatelab.embeddings.torch_backend import TorchTrainer

            trainer = TorchTrainer(
                w_in,
                w_out,
                keep,
                table,
                cfg.window,
                cfg.negative,
                cfg.effective_batch_size,
                device=cfg.device,
                windows_per_step=cfg.windows_per_step,
            )

            def run(k, a0, a1, seed):
                return trainer.train_chunk(corpus.chunk(k), a0, a1, seed)

            tensors = (trainer.w_in, trainer.w_out)

        def alpha_at(progress: float) -> float:
            return max(cfg.alpha - (cfg.alpha - cfg.min_alpha) * progress, cfg.min_alpha)

        bar = None
        if self.progress and rank == 0:
            from tqdm import tqdm

            bar = tqdm(
                total=int(shard_words_est * epochs * world),
                unit="word",
                unit_scale=True,
                disable=not sys.stderr.isatty(),
                desc="word2vec",
                smoothing=0.1,
            )
        workers = cfg.workers if backend == "numba" else 1
        pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
        raw_total = eff_total = 0
        n_syncs = full_syncs = 0
        t0 = time.perf_counter()
        torch_threads = None
        if backend == "torch" and str(cfg.device).startswith("cpu"):
            import torch

            torch_threads = torch.get_num_threads()  # on cpu, ``workers`` is torch's thread count
            torch.set_num_threads(cfg.workers)

        def job(epoch, k):
            p0 = (epoch * shard_tokens + corpus.chunks[k] - corpus.chunks[lo]) / (epochs * shard_tokens)
            p1 = (epoch * shard_tokens + corpus.chunks[k + 1] - corpus.chunks[lo]) / (epochs * shard_tokens)
            seed = (cfg.seed * 1_000_003 + epoch * (n + 1) + k + 1) & 0x7FFFFFFFFFFFFFFF
            return k, alpha_at(p0), alpha_at(p1), seed

        if dist is None:
            # one process: a single queue of every chunk of every epoch, no barrier between them
            rounds = [[job(e, k) for e in range(epochs) for k in my_chunks]]
        else:
            # several processes: rounds of ``round_size`` chunks, the same number on every process,
            # so that all of them reach each model synchronisation together
            rounds = [
                [job(e, k) for k in my_chunks[r * round_size : (r + 1) * round_size]]
                for e in range(epochs)
                for r in range(rounds_per_epoch)
            ]
        total_rounds = len(rounds)
        try:
            for done_round, jobs in enumerate(rounds, 1):
                if pool is not None:
                    futures = [pool.submit(run, *j) for j in jobs]
                    results = (f.result() for f in futures)
                else:
                    results = (run(*j) for j in jobs)
                for j, (raw, eff) in zip(jobs, results):
                    raw_total += int(raw)
                    eff_total += int(eff)
                    if bar is not None:
                        bar.update(int(raw) * world)
                        elapsed = time.perf_counter() - t0
                        bar.set_postfix_str(
                            f"lr {j[2]:.5f}  {raw_total * world / max(elapsed, 1e-9) / 1e3:.0f}k words/s"
                        )
                if dist is not None and (done_round % cfg.sync_every == 0 or done_round == total_rounds):
                    n_syncs += 1
                    rows = min(len(vocab), cfg.min_sync_words << _trailing_zeros(n_syncs))
                    if cfg.full_sync_times and done_round / total_rounds >= (full_syncs + 1) / (
                        cfg.full_sync_times + 1
                    ):
                        full_syncs += 1
                        rows = len(vocab)
                    if done_round == total_rounds:
                        rows = len(vocab)
                    self._average_rows(dist, tensors, rows, world)
        finally:
            if torch_threads is not None:
                torch.set_num_threads(torch_threads)
            if pool is not None:
                pool.shutdown()
            if bar is not None:
                bar.close()
        if backend == "torch":
            trainer.sync_to_host()
        seconds = time.perf_counter() - t0
        raw_all, eff_all = raw_total, eff_total
        if dist is not None:
            import torch

            t = torch.tensor([raw_total, eff_total], dtype=torch.int64)
            dist.all_reduce(t)
            raw_all, eff_all = int(t[0]), int(t[1])
        self.wv._norms = None
        self.train_stats_ = {
            "raw_words": raw_all,
            "effective_words": eff_all,
            "seconds": seconds,
            "words_per_sec": raw_all / max(seconds, 1e-9),
            "epochs": epochs,
            "processes": world,
            "threads": workers,
            "backend": backend,
            "syncs": n_syncs,
        }
        return self

    @staticmethod
    def _average_rows(dist, tensors, rows: int, world: int) -> None:
        for t in tensors:
            part = t[:rows]
            if part.is_contiguous() and t.device.type == "cpu":
                dist.all_reduce(part)
                part.div_(world)
            else:
                buf = part.contiguous()
                dist.all_reduce(buf)
                t[:rows] = buf / world

    # --- convenience -----------------------------------------------------------------------
    def config_dict(self) -> dict:
        d = dataclasses.asdict(self.config)
        d["batch_size"] = self.config.effective_batch_size
        d["backend"] = self.config.effective_backend
        return d

    def close(self) -> None:
        """Remove the encoded corpus file (training cannot resume after this)."""
        if self.corpus is not None:
            self.corpus.close()
            self.corpus = None

    def __repr__(self) -> str:
        n = len(self.vocab) if self.vocab else 0
        return f"Word2Vec(vocab={n}, vector_size={self.config.vector_size}, window={self.config.window})"


def train_word2vec(
    sentences, out: str | os.PathLike | None = None, binary: bool = True, progress: bool = False, **params
) -> Word2Vec:
    """Train and (if ``out``) save the vectors in word2vec format, with the config JSON beside them."""
    from gatelab.files import write_json

    model = Word2Vec(progress=progress, **params)
    model.build_vocab(sentences)
    model.train()
    model.close()
    if out is not None:
        out = Path(out)
        model.wv.save_word2vec_format(out, binary=binary)
        write_json(
            out.with_name(out.name + ".json"),
            {
                "config": model.config_dict(),
                "train": model.train_stats_,
                "vocab_size": len(model.vocab),
                "corpus": repr(sentences),
            },
        )
    return model
