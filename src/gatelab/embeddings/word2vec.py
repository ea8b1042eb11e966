"""Word2Vec (skip-gram, negative sampling) trained the HogBatch way.

Ji, Shah, Satish, Li, Dubey, "Parallelizing Word2Vec in Shared and Distributed Memory"
(arXiv:1604.04661, 1611.06172): the context words of a window share one draw of noise words,
so each update is a few small matrix-matrix products; threads update the shared matrices
without locks; processes train on shards of the corpus (every ``world``-th chunk, so that they
go through the corpus side by side in its order, with the learning rate of the whole run) and
merge their models after every round of one chunk per thread (the sum of every rank's changes
since the last merge), the frequent words (the first rows of the frequency-sorted vocabulary)
more often than the rest.

Typical use::

    model = Word2Vec(LineCorpus("corpus.txt"), vector_size=100, window=5, workers=2)
    model.wv.most_similar("king")
    model.wv.save_word2vec_format("vectors.bin", binary=True)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from gatelab import distributed
from gatelab.checkpoint import Checkpointer, Interrupted, check_resumable, load_state, rng_state, set_rng_state
from gatelab.embeddings.keyedvectors import KeyedVectors
from gatelab.embeddings.vocab import EncodedCorpus, Vocab
from gatelab.errors import GatelabError, check_choice
from gatelab.files import check_output_path, write_json
from gatelab.progress import ScalarLog, bar, say


@dataclass
class Word2VecConfig:
    """Hyperparameters; names and defaults follow gensim's ``Word2Vec`` (skip-gram, negative sampling).

    ``batch_size`` is the paper's: the most context words that share one draw of noise words
    (None: all ``2 * window`` of a window, as in the authors' default). ``chunk_words`` is the
    size of the unit of work a thread takes. ``sync_every`` (rounds of one chunk per thread),
    ``min_sync_words`` and ``full_sync_times`` set the distributed model synchronisation: every
    sync merges the first ``min_sync_words`` rows, every 2nd sync twice as many, every 4th four
    times as many, ... (the authors' schedule), plus ``full_sync_times`` full merges spread over
    training and one at the end. A merge adds every rank's changes since the row's last merge.
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
        need(0 <= self.sample < 1, f"sample must be a frequency threshold in [0, 1), got {self.sample}")
        need(self.min_count >= 1, f"min_count must be >= 1, got {self.min_count}")
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(
            0 < self.alpha <= 1 and 0 <= self.min_alpha <= self.alpha,
            f"alpha must be in (0, 1] and min_alpha in [0, alpha], got {self.alpha}, {self.min_alpha}",
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


def _trailing_zeros(v: int) -> int:
    return (v & -v).bit_length() - 1


FORMAT = "gatelab.word2vec"
#: config fields a resumed run may change: they alter speed, not the meaning of the saved position
RESUMABLE_CHANGES = ("workers", "device", "backend", "windows_per_step")


@dataclass
class _Position:
    """Where training stands: ``step`` chunks (one process) or rounds (several) done in ``epoch``."""

    epoch: int = 0
    step: int = 0
    raw_words: int = 0  # over all processes, at the last save or resume
    effective_words: int = 0
    syncs: int = 0
    full_syncs: int = 0
    seconds: float = 0.0


def _run_jobs(run, jobs, threads: int, pause, on_words) -> tuple[int, int, int]:
    """Run ``jobs`` in order on ``threads`` threads sharing the matrices (Hogwild).

    Threads take the next job as they finish one, and ask ``pause()`` first (say, the
    Checkpointer's ``stop_requested``, or a save being due): once it is true they take no new
    job, so the jobs done are always a prefix. Returns (jobs done, raw words, effective words);
    ``on_words(raw)`` sees the words as they are done (for a progress bar, every 50 ms).
    """
    lock = threading.Condition()
    stop = threading.Event()
    state = {"next": 0, "raw": 0, "eff": 0, "alive": 0, "error": None}

    def worker():
        try:
            while not stop.is_set():
                if pause():
                    stop.set()
                    return
                with lock:
                    i = state["next"]
                    if i >= len(jobs):
                        return
                    state["next"] = i + 1
                raw, eff = run(*jobs[i])
                with lock:
                    state["raw"] += int(raw)
                    state["eff"] += int(eff)
        except BaseException as exc:  # handed to the calling thread
            with lock:
                state["error"] = state["error"] or exc
            stop.set()
        finally:
            with lock:
                state["alive"] -= 1
                lock.notify_all()

    threads = max(1, min(threads, len(jobs)))
    pool = [threading.Thread(target=worker, name=f"word2vec-{t}", daemon=True) for t in range(threads)]
    state["alive"] = len(pool)
    for t in pool:
        t.start()
    seen = 0
    try:
        with lock:
            while state["alive"]:
                lock.wait(0.05)
                on_words(state["raw"] - seen)
                seen = state["raw"]
    finally:  # also on a second Ctrl-C: no thread may outlive the call
        stop.set()
        for t in pool:
            t.join()
    if state["error"] is not None:
        raise state["error"]
    on_words(state["raw"] - seen)
    return state["next"], state["raw"], state["eff"]


class Word2Vec:
    """Skip-gram with negative sampling, HogBatch style, with gensim's parameters.

    ``sentences`` is any iterable of token lists (read once, streaming: the vocabulary is
    counted while the corpus is encoded to an int32 file that the epochs then read by memory
    map) or a path to a text file with one sentence a line; given here, the model is trained
    at once. Under ``torchrun`` (:mod:`gatelab.distributed` initialised) each process counts and
    encodes its own shard of the chunks, the processes combine their counts into the vocabulary
    that one process would count, each trains on its shard, and the models are merged as
    described in :class:`Word2VecConfig`; after training all processes hold the same vectors.

    Long runs: ``train(checkpoint=...)`` saves the matrices, the position (epoch and chunk, so
    the linear learning-rate decay continues where it stopped), the vocabulary and the config
    at each epoch's end and every ``checkpoint_every`` seconds, and on SIGINT/SIGTERM saves and
    raises :class:`gatelab.checkpoint.Interrupted` within a chunk's time.
    ``build_vocab(..., resume=path)`` continues such a run.

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
        self._position = _Position()
        self._corpus_info: dict = {}
        if sentences is not None:
            self.build_vocab(sentences)
            self.train()

    # --- vocabulary ----------------------------------------------------------------------
    def build_vocab(
        self, sentences, workdir: str | os.PathLike | None = None, resume: str | os.PathLike | None = None
    ) -> "Word2Vec":
        """Read the corpus once: count, sort and prune the vocabulary, encode the corpus.

        ``workdir`` keeps the encoded corpus there (else in a temporary folder removed by
        :meth:`close`). ``resume`` is a checkpoint of :meth:`train`: its vocabulary, matrices
        and position are restored (the configuration must match), and a corpus that an earlier
        run encoded under ``workdir`` with that vocabulary is reused instead of read again.
        """
        cfg = self.config
        sentences = _as_sentences(sentences)
        if self.corpus is not None:
            self.corpus.close()
            self.corpus = None
        rank, world = distributed.rank(), distributed.world_size()
        state = self._load_checkpoint(resume) if resume is not None else None
        vocab = n_sentences = None
        if state is not None:
            vocab = Vocab(list(state["vocab"]["words"]), state["vocab"]["counts"].numpy())
            n_sentences = state["corpus"]["n_sentences"]
        key = {
            "source": repr(sentences),
            "max_sentence_length": cfg.max_sentence_length,
            "chunk_words": cfg.chunk_words,
            "shard": [rank, world],
        }
        layout = dict(max_sentence_length=cfg.max_sentence_length, chunk_words=cfg.chunk_words, key=key)
        name = f"corpus.rank{rank}" if world > 1 else "corpus"
        corpus = None
        if state is not None and workdir is not None:
            corpus = EncodedCorpus.reopen(workdir, vocab, name=name, key=key)
        if corpus is None and vocab is None:  # each rank counts its shard; they combine the counts
            corpus = EncodedCorpus.build(
                sentences,
                min_count=cfg.min_count,
                max_vocab_size=cfg.max_vocab_size,
                workdir=workdir,
                name=name,
                shard=(rank, world),
                gather=distributed.all_gather_object,
                **layout,
            )
            n_sentences = corpus.lines
        elif corpus is None:
            corpus = EncodedCorpus.encode(sentences, vocab, shard=(rank, world), workdir=workdir, name=name, **layout)
        self.corpus, self.vocab = corpus, corpus.vocab
        self._corpus_info = {"source": key["source"], "n_sentences": n_sentences}
        v, d = len(self.vocab), cfg.vector_size
        if state is None:
            rng = np.random.default_rng(cfg.seed)
            w_in = rng.random((v, d), dtype=np.float32)  # (u - 0.5) / d, in place: no temporary matrices
            w_in -= 0.5
            w_in /= d
            self.syn1neg = np.zeros((v, d), dtype=np.float32)
            self._position = _Position()
        else:
            w_in = state["w_in"].numpy().copy()
            self.syn1neg = state["w_out"].numpy().copy()
            self._position = _Position(**state["position"])
            set_rng_state(state["rng"])
        self.wv = KeyedVectors(self.vocab.words, w_in, self.vocab.counts)
        return self

    def _resume_config(self) -> dict:
        return {**self.config_dict(), "processes": distributed.world_size()}

    def _load_checkpoint(self, path) -> dict:
        """Rank 0 reads the checkpoint (a GatelabError for anything unreadable or mismatched); all ranks get it."""

        def read() -> dict:
            try:
                state = load_state(path, "word2vec checkpoint")
                check_resumable(state, FORMAT, self._resume_config(), path, may_differ=RESUMABLE_CHANGES)
                words, counts = state["vocab"]["words"], state["vocab"]["counts"]
                shape = (len(words), self.config.vector_size)
                if (
                    not isinstance(words, list)
                    or not isinstance(counts, torch.Tensor)
                    or counts.shape != (len(words),)
                    or any(tuple(state[k].shape) != shape or state[k].dtype != torch.float32 for k in ("w_in", "w_out"))
                ):
                    raise GatelabError(f"{path}: the vocabulary and matrices do not fit together")
                position = dataclasses.asdict(_Position(**state["position"]))
                if not all(isinstance(v, (int, float)) for v in position.values()):
                    raise GatelabError(f"{path}: the position holds a value that is not a number")
                state["corpus"]["n_sentences"]
            except (KeyError, TypeError, AttributeError) as exc:
                raise GatelabError(
                    f"{path} is not a complete word2vec checkpoint ({type(exc).__name__}: {exc})"
                ) from None
            return state

        return distributed.on_main(read)

    # --- training ------------------------------------------------------------------------
    def train(
        self,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: float = 300.0,
        log_dir: str | os.PathLike | None = None,
    ) -> "Word2Vec":
        """Train the configured number of epochs (from the resumed position, if any).

        ``checkpoint``: where to save (rank 0) at each epoch's end, every ``checkpoint_every``
        seconds and on SIGINT/SIGTERM (then :class:`Interrupted` is raised). ``log_dir``:
        TensorBoard scalars (words/s, learning rate) per epoch.
        """
        if self.corpus is None:
            raise GatelabError("build_vocab (or pass sentences to Word2Vec) before train")
        cfg = self.config
        epochs = cfg.epochs
        corpus, vocab = self.corpus, self.vocab
        keep = vocab.keep_probabilities(cfg.sample)
        table = vocab.noise_table()
        w_in, w_out = self.wv.vectors, self.syn1neg
        rank, world = distributed.rank(), distributed.world_size()
        n = corpus.n_chunks
        total_tokens = max(corpus.total_tokens, 1)  # of the whole corpus, over all ranks
        round_size = cfg.workers
        backend = cfg.effective_backend
        dev = torch.device(cfg.device if backend == "torch" else "cpu")  # of the counts that ranks exchange (NCCL)
        if world > 1:  # every rank runs the same number of rounds, so all meet at each model merge
            chunks_per_rank = torch.zeros(world, dtype=torch.int64, device=dev)
            chunks_per_rank[rank] = n
            distributed.all_reduce_(chunks_per_rank)
            steps_per_epoch = max(-(-int(chunks_per_rank.max()) // round_size), 1)
        else:
            steps_per_epoch = n

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

            tensors = (torch.from_numpy(w_in), torch.from_numpy(w_out))
            host = lambda: None  # noqa: E731 (the matrices are the numpy arrays)
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
            host = trainer.sync_to_host

        def alpha_at(done: float) -> float:
            return max(cfg.alpha - (cfg.alpha - cfg.min_alpha) * done, cfg.min_alpha)

        def job(epoch, k):
            """Chunk k with the learning rate that one process gives that place of the whole corpus."""
            start = epoch * total_tokens + int(corpus.origins[k])
            p0 = start / (epochs * total_tokens)
            p1 = (start + int(corpus.chunks[k + 1] - corpus.chunks[k])) / (epochs * total_tokens)
            seed = (cfg.seed * 1_000_003 + (rank * epochs + epoch) * (n + 1) + k + 1) & 0x7FFFFFFFFFFFFFFF
            return k, alpha_at(p0), alpha_at(p1), seed

        pos = self._position
        local = np.zeros(2, dtype=np.int64)  # raw and effective words this process did since the last save

        def totals() -> tuple[int, int]:
            t = distributed.all_reduce_(torch.from_numpy(local.copy()).to(dev))
            return pos.raw_words + int(t[0]), pos.effective_words + int(t[1])

        def bank(seconds: float) -> None:
            """Fold the words done since the last save into ``pos`` (a collective under torchrun)."""
            pos.raw_words, pos.effective_words = totals()
            local[:] = 0
            pos.seconds += seconds

        def state() -> dict:
            host()
            return {
                "format": FORMAT,
                "config": self._resume_config(),
                "w_in": torch.from_numpy(w_in),  # no copy: no thread trains while a state is saved
                "w_out": torch.from_numpy(w_out),
                "vocab": {"words": vocab.words, "counts": torch.from_numpy(vocab.counts.copy())},
                "corpus": dict(self._corpus_info),
                "position": dataclasses.asdict(pos),
                "rng": rng_state(),
            }

        bases = [t.clone() for t in tensors] if world > 1 else []  # the model at the last merge, row by row
        workers = cfg.workers if backend == "numba" else 1
        torch_threads = None
        if backend == "torch" and str(cfg.device).startswith("cpu"):
            torch_threads = torch.get_num_threads()  # on cpu, ``workers`` is torch's thread count
            torch.set_num_threads(cfg.workers)
        quiet = not self.progress or rank != 0
        total_words = corpus.n_words * world * epochs
        words_bar = bar(total=total_words, desc="word2vec", unit="word", quiet=quiet, unit_scale=True)
        words_bar.update(min(pos.raw_words, total_words))
        on_words = lambda raw: words_bar.update(raw * world)  # noqa: E731 (an estimate under torchrun)
        resumed_from = pos.raw_words
        clock = time.monotonic()
        try:
            with (
                Checkpointer(checkpoint if rank == 0 else None, checkpoint_every) as ckpt,
                ScalarLog(log_dir if rank == 0 else None) as log,
            ):

                def save(stop: bool) -> None:
                    nonlocal clock
                    now = time.monotonic()
                    bank(now - clock)
                    clock = now
                    if stop:
                        signum = ckpt.signum or signal.SIGINT
                        ckpt.save(state)
                        raise Interrupted(signum, Path(checkpoint) if checkpoint is not None else None)
                    ckpt.save(state)

                while pos.epoch < epochs:
                    epoch = pos.epoch
                    epoch_raw, epoch_t0 = pos.raw_words + int(local[0]), time.monotonic()
                    while pos.step < steps_per_epoch:
                        if world == 1:
                            jobs = [job(epoch, k) for k in range(pos.step, n)]
                            pause = lambda: ckpt.stop_requested or ckpt.save_due  # noqa: E731
                            done, raw, eff = _run_jobs(run, jobs, workers, pause, on_words)
                            local += (raw, eff)
                            pos.step += done
                            if pos.step < steps_per_epoch:  # paused: stop or save, at a consistent state
                                save(stop=ckpt.stop_requested)
                            continue
                        r = pos.step
                        jobs = [job(epoch, k) for k in range(r * round_size, min((r + 1) * round_size, n))]
                        _, raw, eff = _run_jobs(run, jobs, workers, lambda: False, on_words)
                        local += (raw, eff)
                        pos.step += 1
                        last_round = epoch == epochs - 1 and pos.step == steps_per_epoch
                        if pos.step % cfg.sync_every == 0 or pos.step == steps_per_epoch:
                            pos.syncs += 1
                            rows = min(len(vocab), cfg.min_sync_words << _trailing_zeros(pos.syncs))
                            done_rounds = epoch * steps_per_epoch + pos.step
                            if cfg.full_sync_times and done_rounds / (epochs * steps_per_epoch) >= (
                                pos.full_syncs + 1
                            ) / (cfg.full_sync_times + 1):
                                pos.full_syncs += 1
                                rows = len(vocab)
                            if last_round:
                                rows = len(vocab)
                            self._merge_rows(tensors, bases, rows)
                        flags = [int(ckpt.stop_requested), int(ckpt.save_due)]
                        flags = torch.tensor(flags, dtype=torch.int64, device=dev)
                        distributed.all_reduce_(flags)
                        if (flags.any() or pos.step == steps_per_epoch) and not last_round:
                            self._merge_rows(tensors, bases, len(vocab))  # a checkpoint holds the one common model
                        if flags.any() and pos.step < steps_per_epoch:
                            save(stop=bool(flags[0]))
                    pos.epoch, pos.step = epoch + 1, 0
                    save(stop=world == 1 and ckpt.stop_requested)  # several processes agree on a stop first
                    seconds = time.monotonic() - epoch_t0
                    words = pos.raw_words - epoch_raw
                    lr = alpha_at(pos.epoch / epochs)
                    say(
                        f"word2vec epoch {pos.epoch}/{epochs}: {words} words, {words / max(seconds, 1e-9) / 1e3:.0f}k "
                        f"words/s, lr {lr:.5f}",
                        quiet=quiet,
                    )
                    log.add(pos.raw_words, words_per_sec=words / max(seconds, 1e-9), lr=lr)
        finally:
            if torch_threads is not None:
                torch.set_num_threads(torch_threads)
            words_bar.close()
        host()
        self.wv._norms = None
        self.train_stats_ = {
            "raw_words": pos.raw_words,
            "effective_words": pos.effective_words,
            "resumed_from_words": resumed_from,
            "seconds": pos.seconds,
            "words_per_sec": pos.raw_words / max(pos.seconds, 1e-9),
            "epochs": epochs,
            "processes": world,
            "threads": workers,
            "backend": backend,
            "syncs": pos.syncs,
        }
        return self

    @staticmethod
    def _merge_rows(tensors, bases, rows: int) -> None:
        """Merge the first ``rows`` rows of both matrices over the processes: base + the sum of every rank's change.

        ``bases`` hold the rows as they were at their last merge (the same on every rank). Summing
        the changes keeps every update, as threads sharing one model would. Averaging the models
        instead divided each rank's updates by the number of processes, so the many words that one
        rank alone saw between merges learned at a fraction of the rate (on Brown + PTB, WS-353 0.19
        against 0.25 for one process; weighting each rank's change by its share of the row's updates
        gave 0.17, the sum 0.22, also with merges of every row or four times as often). In place, with
        no temporary matrices: the same numbers at about half the cost beside the all-reduce itself.
        """
        for t, base in zip(tensors, bases):
            head, base_head = t[:rows], base[:rows]  # views: the change is made, summed and applied in place
            head -= base_head
            distributed.all_reduce_(head)
            head += base_head
            base_head.copy_(head)

    # --- convenience -----------------------------------------------------------------------
    def config_dict(self) -> dict:
        d = dataclasses.asdict(self.config)
        d["batch_size"] = self.config.effective_batch_size
        d["backend"] = self.config.effective_backend
        return d

    def close(self) -> None:
        """Release the encoded corpus (a temporary one is removed; one under a ``workdir`` stays)."""
        if self.corpus is not None:
            self.corpus.close()
            self.corpus = None

    def __repr__(self) -> str:
        n = len(self.vocab) if self.vocab else 0
        return f"Word2Vec(vocab={n}, vector_size={self.config.vector_size}, window={self.config.window})"


def work_dir(out: str | os.PathLike) -> Path:
    """The folder beside ``out`` that holds an unfinished run's encoded corpus and checkpoint."""
    out = Path(out)
    return out.with_name(out.name + ".work")


def train_word2vec(
    sentences,
    out: str | os.PathLike | None = None,
    binary: bool = True,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 300.0,
    resume: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
    metadata: dict | None = None,
    **params,
) -> Word2Vec:
    """Train and (if ``out``) save the vectors in word2vec format, with the config JSON beside them.

    With ``out``, the encoded corpus and the checkpoint (default ``checkpoint``) live in
    ``work_dir(out)``: an interrupted or killed run leaves them there for ``resume``, a
    finished one removes them. Under torchrun, rank 0 writes the files. ``metadata`` is
    added to the JSON.
    """
    model = Word2Vec(progress=progress, **params)
    sentences = _as_sentences(sentences)
    work = None
    if out is not None:
        out = check_output_path(out)
        work = work_dir(out)
        check_output_path(work, kind="dir")
        if checkpoint is None:
            checkpoint = work / "checkpoint.pt"
    try:
        model.build_vocab(sentences, workdir=work, resume=resume)
        model.train(checkpoint=checkpoint, checkpoint_every=checkpoint_every, log_dir=log_dir)
    except BaseException:
        model.close()
        if work is not None and distributed.is_main() and not Path(checkpoint).exists():
            shutil.rmtree(work, ignore_errors=True)  # nothing to resume from
        raise
    model.close()
    if out is not None and distributed.is_main():
        model.wv.save_word2vec_format(out, binary=binary)
        info = {
            "config": model.config_dict(),
            "train": model.train_stats_,
            "vocab_size": len(model.vocab),
            "corpus": repr(sentences),
        }
        write_json(out.with_name(out.name + ".json"), {**info, **(metadata or {})})
    if work is not None:
        distributed.barrier()  # every rank is done with its shard before the folder goes
        if distributed.is_main():
            shutil.rmtree(work, ignore_errors=True)
    return model
