"""WordRank across processes: the kernel's negative range, the block split, and one 2-process gloo launch.

The first launch (each costs seconds of imports) does four things: 30 epochs on 300k tokens of Brown + PTB for
quality against one process; a run stopped by SIGINT on one rank, then resumed, against an uninterrupted one;
a vocabulary too small for two processes; and the ``gatelab wordrank train`` CLI on the saved matrix. Two more
launches kill the CLI with SIGKILL after a checkpoint and resume it.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gatelab.checkpoint import load_state
from gatelab.embeddings import _wordrank_kernel
from gatelab.embeddings.evaluate import evaluate_all
from gatelab.embeddings.keyedvectors import KeyedVectors
from gatelab.embeddings.wordrank import WordRank, block_bounds
from gatelab.errors import GatelabError

# WS-353 and SimLex-999 of 2 processes may fall below 1 process by at most this. Here 2 processes score
# 0.271 and 0.079 against 0.265 and 0.073 for one; with the context blocks never exchanged (each rank
# training against its own stale copy of V) WS-353 fell to 0.160 and this test failed
TOLERANCE = 0.03


def fixed_jobs(*extra):
    """Two passes (SGD, AdaGrad) over 400 random nonzeros of 50 words; the matrices after each."""
    rng = np.random.default_rng(3)
    n, d, nnz = 50, 8, 400
    rows, cols = rng.integers(0, n, nnz), rng.integers(0, n, nnz)
    coef = rng.random(nnz).astype(np.float32)
    out = []
    for adagrad in (False, True):
        U, V = rng.random((n, d), dtype=np.float32), rng.random((n, d), dtype=np.float32)
        HU, HV = (np.zeros_like(U), np.zeros_like(V)) if adagrad else (None, None)
        seeds = np.array([7], np.uint64)
        order = rng.permutation(nnz)
        _wordrank_kernel.train_pass(
            order, rows, cols, coef, U, V, HU, HV, np.float32(0.01), np.float32(0), False, seeds, *extra
        )
        out += [U, V]
    return out


def test_the_whole_range_is_the_default_bit_for_bit():
    """One process passes the whole range; each step's values are checked against a reference in
    test_wordrank.py (a stored hash of the old kernel's output held only on one CPU's float rounding)."""
    for default, whole in zip(fixed_jobs(), fixed_jobs(0, 50)):
        assert np.array_equal(default, whole)


def test_negatives_stay_inside_the_range():
    """Nonzeros whose contexts lie in [10, 20): only those context rows (and the words' rows) move."""
    rng = np.random.default_rng(0)
    n, d = 40, 6
    rows = rng.integers(0, n, 300).astype(np.int32)
    cols = rng.integers(10, 20, 300).astype(np.int32)
    U, V = rng.random((n, d), dtype=np.float32), rng.random((n, d), dtype=np.float32) * 0.01
    V0 = V.copy()
    order = np.arange(300, dtype=np.int64)
    coef = np.ones(300, np.float32)
    seeds = np.array([1], np.uint64)
    _wordrank_kernel.train_pass(
        order, rows, cols, coef, U, V, None, None, np.float32(0.1), np.float32(0), False, seeds, 10, 20
    )
    moved = np.flatnonzero(np.any(V != V0, axis=1))
    assert moved.min() >= 10 and moved.max() < 20 and len(moved) == 10  # every row of the block was drawn


def test_blocks_hold_about_equal_nonzeros_and_at_least_two_words():
    counts = np.array([50, 30, 10, 5, 2, 1, 1, 1])
    b = block_bounds(counts, 2)
    assert list(b) == [0, 2, 8]  # 80 against 20: the first word alone would hold more than half
    b = block_bounds(np.ones(100), 4)
    assert list(b) == [0, 25, 50, 75, 100]
    assert list(block_bounds(np.array([1000, 1, 1, 1]), 2)) == [0, 2, 4]  # at least 2 words a block
    with pytest.raises(GatelabError, match="cannot split 5 words into 3 blocks"):
        block_bounds(np.ones(5), 3)


WORKER = """
import json, os, signal, sys
import numpy as np
from gatelab import distributed
from gatelab.checkpoint import Interrupted, load_state
from gatelab.cli import main
from gatelab.embeddings import _wordrank_kernel
from gatelab.embeddings.cooccurrence import CooccurrenceMatrix
from gatelab.embeddings.vocab import Vocab
from gatelab.embeddings.wordrank import WordRank
from gatelab.errors import GatelabError

out, npz = sys.argv[1], sys.argv[2]
distributed.init(timeout=60)
rank = distributed.rank()
matrix = CooccurrenceMatrix.load(npz)
model = WordRank(epochs=30, workers=1, seed=1).fit(matrix)
if rank == 0:
    model.wv.save_word2vec_format(os.path.join(out, "two.bin"))
    json.dump(model.train_stats_, open(os.path.join(out, "two.json"), "w"))

# a stop on rank 1 (SIGINT at its 25th job: in the first sub-epoch of epoch 3), then a resume, against no stop;
# xi is updated after epochs 1 and 2; AdaGrad, so that its sums go through the relabelling and the checkpoint too
resumable = dict(epochs=3, workers=1, seed=2, period=1, optimizer="adagrad")
whole = WordRank(**resumable).fit(matrix)
real, calls = _wordrank_kernel.train_pass, []

def stopping(*args):
    calls.append(1)
    if rank == 1 and len(calls) == 25:
        os.kill(os.getpid(), signal.SIGINT)
    return real(*args)

_wordrank_kernel.train_pass = stopping
ckpt = os.path.join(out, "ck.pt")
try:
    WordRank(**resumable).fit(matrix, checkpoint=ckpt)
    raise SystemExit("not interrupted")
except Interrupted:
    pass
_wordrank_kernel.train_pass = real
position = load_state(ckpt)["position"]
resumed = WordRank(**resumable).fit(matrix, checkpoint=ckpt, resume=ckpt)
if rank == 0:
    same = [np.array_equal(a, b) for a, b in ((resumed.word_vectors_.vectors, whole.word_vectors_.vectors),
            (resumed.context_vectors_.vectors, whole.context_vectors_.vectors), (resumed.xi_, whole.xi_))]
    xi_updated = "objective" in resumed.history_[1] and bool(np.any(resumed.xi_ != 1.0))
    json.dump({"position": position, "same": same, "from": resumed.train_stats_["resumed_from_updates"],
               "updates": resumed.train_stats_["updates"], "xi_updated": xi_updated},
              open(os.path.join(out, "resume.json"), "w"))

tiny = CooccurrenceMatrix(Vocab(["a", "b", "c"], np.array([3, 2, 1])), np.array([0, 1], np.int32),
                          np.array([1, 0], np.int32), np.ones(2), 5, 1, 10)
try:
    WordRank(epochs=1).fit(tiny)
except GatelabError as exc:
    open(os.path.join(out, f"tiny{rank}.txt"), "w").write(str(exc))

code = main(["wordrank", "train", npz, "--out", os.path.join(out, "cli.bin"), "--epochs", "2", "--quiet"])
open(os.path.join(out, f"cli{rank}.txt"), "w").write(str(code))
"""


def scores(kv):
    return {r["name"]: r["score"] for r in evaluate_all(kv)}


def kill_processes_naming(text: str) -> None:
    """SIGKILL every process whose command line contains ``text``, and wait until none is left."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = False
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if text in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    found = True
                    os.kill(int(pid), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass  # ended meanwhile
        if not found:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes naming {text} outlived SIGKILL")


def test_two_processes_learn_as_well_as_one_resume_and_refuse_a_tiny_vocabulary(data, tmp_path):
    import json

    from gatelab.data.text import open_corpus
    from gatelab.embeddings.cooccurrence import count_cooccurrences, first_tokens

    matrix = count_cooccurrences(list(first_tokens(open_corpus("brown+ptb"), 300_000)))
    npz = tmp_path / "m.npz"
    matrix.save(npz)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [*cmd, str(script), str(tmp_path), str(npz)], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]

    one = scores(WordRank(epochs=30, workers=1, seed=1).fit(matrix).wv)
    two = scores(KeyedVectors.load_word2vec_format(tmp_path / "two.bin"))
    stats = json.loads((tmp_path / "two.json").read_text())
    assert stats["processes"] == 2 and stats["updates"] == 30 * matrix.nnz
    # (negatives drawn within a context block change the sampling a little, as in the authors' schedule;
    # at 1M tokens and 100 epochs 2 processes score a little lower, see README)
    for name in ("WS-353", "SimLex-999"):
        assert two[name] > one[name] - TOLERANCE, (name, two, one)

    resume = json.loads((tmp_path / "resume.json").read_text())
    assert resume["position"]["epoch"] == 2 and resume["position"]["step"] == 1  # mid-epoch, a sub-epoch done
    assert resume["same"] == [True, True, True]  # continued exactly where it stopped
    assert resume["xi_updated"]
    assert 0 < resume["from"] < resume["updates"] == 3 * matrix.nnz

    for r in (0, 1):
        msg = (tmp_path / f"tiny{r}.txt").read_text()
        assert "cannot split 3 words into 2 blocks" in msg and "\n" not in msg
        assert (tmp_path / f"cli{r}.txt").read_text() == "0"
    cli = KeyedVectors.load_word2vec_format(tmp_path / "cli.bin")
    assert len(cli.index_to_key) == len(matrix.vocab)
    assert json.loads((tmp_path / "cli.bin.json").read_text())["train"]["processes"] == 2
    assert not (tmp_path / "cli.bin.wordrank-work").exists()

    # the CLI killed (SIGKILL, both ranks) after its first checkpoint, then resumed: it continues and finishes.
    # 1,000 epochs cannot end before the kill on any machine; the resume asks for two epochs past the checkpoint
    out = tmp_path / "killed.bin"
    ckpt = tmp_path / "killed.bin.wordrank-work" / "checkpoint.pt"
    train = [*cmd, "-m", "gatelab", "wordrank", "train", str(npz), "--out", str(out), "--quiet"]
    train += ["--workers", "1", "--checkpoint-every", "0.3"]
    proc = subprocess.Popen(
        [*train, "--epochs", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        kill_processes_naming(str(out))  # torchrun starts its workers in groups of their own
    finally:
        proc.wait()
    saved = load_state(ckpt)  # intact after the kill
    assert 0 < saved["position"]["updates"], saved["position"]
    epochs = saved["position"]["epoch"] + 2
    resumed = [*train, "--epochs", str(epochs), "--resume", str(ckpt)]
    run = subprocess.run(resumed, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads((tmp_path / "killed.bin.json").read_text())
    assert info["train"]["resumed_from_updates"] >= saved["position"]["updates"]
    assert info["train"]["updates"] == epochs * matrix.nnz and len(info["history"]) == epochs


def test_a_checkpoint_resumes_only_with_as_many_processes(tmp_path):
    from gatelab.checkpoint import save_state
    from gatelab.embeddings.cooccurrence import count_cooccurrences

    from .conftest import planted_sentences

    matrix = count_cooccurrences(planted_sentences(n_sentences=100)[0], window=3, min_count=1)
    ckpt = tmp_path / "ck.pt"
    WordRank(vector_size=4, epochs=1, workers=1).fit(matrix, checkpoint=ckpt)
    state = load_state(ckpt)
    assert state["processes"] == 1
    save_state(ckpt, {**state, "processes": 2})
    with pytest.raises(GatelabError, match="written by 2 process"):
        WordRank(vector_size=4, epochs=2, workers=1).fit(matrix, resume=ckpt)
