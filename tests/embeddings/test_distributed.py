"""Two processes on gloo through gatelab.distributed: shards, averaged models that end equal, a lost worker named."""

import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gatelab.embeddings import KeyedVectors

from .conftest import planted_sentences

WORKER = """
import os, sys
import numpy as np
from gatelab import distributed
from gatelab.embeddings import Word2Vec

{planted}

out_dir = sys.argv[1]
distributed.init(timeout=60)
rank = distributed.rank()
try:
    sents, _ = planted_sentences(n_sentences=2000)
    model = Word2Vec(vector_size=24, window=3, min_count=1, sample=0, epochs=3, workers=1, seed=5,
                     chunk_words=1000, min_sync_words=16)
    model.build_vocab(sents)
    shard_words = model.corpus.n_words
    model.train()
    model.wv.save_word2vec_format(os.path.join(out_dir, f"rank{{rank}}.bin"), binary=True)
    np.save(os.path.join(out_dir, f"out{{rank}}.npy"), model.syn1neg)
    np.save(os.path.join(out_dir, f"stats{{rank}}.npy"),
            np.array([model.train_stats_["raw_words"], model.train_stats_["syncs"], shard_words]))
    model.close()
finally:
    distributed.shutdown()
"""


def torchrun(*args, monitor_interval="0.5"):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--monitor-interval",
        monitor_interval,
        *map(str, args),
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_two_gloo_processes_train_their_shards_and_agree(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(planted=inspect.getsource(planted_sentences)))
    proc = subprocess.run(torchrun(script, tmp_path), capture_output=True, text=True, timeout=240, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = KeyedVectors.load_word2vec_format(tmp_path / "rank0.bin")
    b = KeyedVectors.load_word2vec_format(tmp_path / "rank1.bin")
    assert a.index_to_key == b.index_to_key  # one vocabulary, counted on rank 0
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "out0.npy"), np.load(tmp_path / "out1.npy"), atol=1e-6)
    (raw, syncs, shard0), (_, _, shard1) = np.load(tmp_path / "stats0.npy"), np.load(tmp_path / "stats1.npy")
    assert shard0 == shard1 == 1000 * 12  # each rank encoded its own half of the sentences
    assert raw == 3 * 2000 * 12 and syncs > 1  # all words of both shards, several syncs
    # the averaged model still learned the planted groups
    sims = a.unit_vectors()
    g0 = [a.key_to_index[f"g0w{i}"] for i in range(8)]
    g1 = [a.key_to_index[f"g1w{i}"] for i in range(8)]
    assert (sims[g0] @ sims[g0].T).mean() > (sims[g0] @ sims[g1].T).mean() + 0.3


def _worker_pids(launcher: int) -> dict[int, int]:
    """rank -> pid of the workers that torchrun (``launcher``) started."""
    pids = {}
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for pid in (task / "children").read_text().split():
            env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
            if "RANK" in env:
                pids[int(env["RANK"])] = int(pid)
    return pids


def test_cli_under_torchrun_names_a_killed_worker(tmp_path):
    sents, _ = planted_sentences(n_sentences=2000)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(s) for s in sents) + "\n")
    out = tmp_path / "v.bin"
    timeout = 5
    args = [corpus, "--out", out, "--min-count", "1", "--size", "16", "--epochs", "1000", "--workers", "1"]
    # a slow agent monitor stands for a worker lost on another machine: the survivor must notice by itself
    cmd = torchrun("-m", "gatelab", "word2vec", "train", *args, "--dist-timeout", timeout, monitor_interval="120")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, start_new_session=True
    )
    lost = []
    try:
        deadline = time.monotonic() + 120
        while not (out.parent / "v.bin.work" / "checkpoint.pt").exists():  # both ranks are training
            assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint within 120 s"
            time.sleep(0.1)
        work = sorted(p.name for p in (out.parent / "v.bin.work").iterdir())
        assert "corpus.rank0.int32" in work and "corpus.rank1.int32" in work  # each rank encoded its shard there
        pids = _worker_pids(proc.pid)
        os.kill(pids[1], signal.SIGKILL)
        killed_at = time.monotonic()
        for line in proc.stdout:
            if line.startswith("gatelab: error: lost rank"):
                lost.append((time.monotonic(), line.strip()))
                break
            assert time.monotonic() < deadline
        time.sleep(0.5)
        state = Path(f"/proc/{pids[0]}/stat").read_text().split()[2] if Path(f"/proc/{pids[0]}").exists() else "gone"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(lost) == 1 and lost[0][1].startswith("gatelab: error: lost rank 1 of 2"), lost
    assert lost[0][0] - killed_at < timeout + 5
    assert state in ("Z", "gone")  # rank 0 has exited (torchrun's slow monitor has not reaped it yet)
