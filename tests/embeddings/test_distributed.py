"""Two processes on gloo: each trains on its shard, the models are averaged, and they end equal."""

import inspect
import os
import signal
import subprocess
import sys

import numpy as np

from gatelab.embeddings import KeyedVectors

from .conftest import planted_sentences

WORKER = """
import os, sys
import numpy as np
import torch.distributed as dist
from gatelab.embeddings import Word2Vec

{planted}

out_dir = sys.argv[1]
dist.init_process_group("gloo")
rank = dist.get_rank()
try:
    sents, _ = planted_sentences(n_sentences=2000)
    model = Word2Vec(vector_size=24, window=3, min_count=1, sample=0, epochs=3, workers=1, seed=5,
                     chunk_words=1000, min_sync_words=16)
    model.build_vocab(sents)
    model.train()
    model.wv.save_word2vec_format(os.path.join(out_dir, f"rank{{rank}}.bin"), binary=True)
    np.save(os.path.join(out_dir, f"out{{rank}}.npy"), model.syn1neg)
    np.save(os.path.join(out_dir, f"stats{{rank}}.npy"),
            np.array([model.train_stats_["raw_words"], model.train_stats_["syncs"]]))
finally:
    dist.destroy_process_group()
"""


def run_torchrun(args, timeout=240):
    """``torchrun --standalone --nproc_per_node 2 ARGS``; the whole process group is killed on timeout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-2000:]
    return stdout


def test_two_gloo_processes_agree(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(planted=inspect.getsource(planted_sentences)))
    run_torchrun([str(script), str(tmp_path)])
    a = KeyedVectors.load_word2vec_format(tmp_path / "rank0.bin")
    b = KeyedVectors.load_word2vec_format(tmp_path / "rank1.bin")
    assert a.index_to_key == b.index_to_key
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "out0.npy"), np.load(tmp_path / "out1.npy"), atol=1e-6)
    raw, syncs = np.load(tmp_path / "stats0.npy")
    assert raw == 3 * 2000 * 12 and syncs > 1  # all words of both shards, several syncs
    # the averaged model still learned the planted groups
    sims = a.unit_vectors()
    g0 = [a.key_to_index[f"g0w{i}"] for i in range(8)]
    g1 = [a.key_to_index[f"g1w{i}"] for i in range(8)]
    assert (sims[g0] @ sims[g0].T).mean() > (sims[g0] @ sims[g1].T).mean() + 0.3


def test_torchrun_cli(tmp_path):
    sents, _ = planted_sentences(n_sentences=1000)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(s) for s in sents) + "\n")
    out = tmp_path / "v.bin"
    stdout = run_torchrun(
        [
            "-m",
            "gatelab",
            "word2vec",
            "train",
            str(corpus),
            "--out",
            str(out),
            "--min-count",
            "1",
            "--size",
            "16",
            "--epochs",
            "2",
            "--workers",
            "1",
            "--quiet",
        ]
    )
    assert "2 process(es)" in stdout
    kv = KeyedVectors.load_word2vec_format(out)
    assert len(kv) == 80 and kv.vector_size == 16
