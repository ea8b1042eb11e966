"""Two processes on gloo through gatelab.distributed: per-rank shards, models that end equal, a lost worker named.

One torchrun launch (each costs seconds of imports) does both: a training that finishes, then a second one in
which rank 1 is killed with SIGKILL mid-training and rank 0 must say so and stop within the timeout.
"""

import inspect
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gatelab.cli import main
from gatelab.embeddings import KeyedVectors, Word2Vec, _kernel

from .conftest import group_margin, planted_sentences

PARAMS = dict(vector_size=24, window=3, min_count=1, sample=0, workers=1, seed=5, chunk_words=1000, min_sync_words=16)
# one epoch, 48 merges: far from converged, so what the model learned depends on every update counting
SHORT = dict(epochs=1, chunk_words=250)
TOLERANCE = 0.03


def recording(kernel, seen):
    """``kernel`` (train_chunk), noting each chunk's tokens, learning rates, subsampling and noise table in ``seen``."""
    import hashlib

    def train_chunk(stream, w_in, w_out, keep, table, window, negative, batch, alpha0, alpha1, seed, max_sentence):
        digest = hashlib.sha1(keep.tobytes() + table.tobytes()).hexdigest()
        seen.append((stream.tobytes(), alpha0, alpha1, digest))
        return kernel(stream, w_in, w_out, keep, table, window, negative, batch, alpha0, alpha1, seed, max_sentence)

    return train_chunk


WORKER = """
import os, pickle, signal, sys
import numpy as np
from gatelab import distributed
from gatelab.embeddings import Word2Vec, _kernel

{planted}
{recording}

out_dir = sys.argv[1]
distributed.init(timeout=float(sys.argv[2]))
rank = distributed.rank()
sents, _ = planted_sentences(n_sentences=2000)
params = {params}
SHORT = {short}
# encoded corpora go under out_dir (a test's tmp_path), not into temporary folders that a killed rank leaves
model = Word2Vec(epochs=3, **params).build_vocab(sents, workdir=os.path.join(out_dir, "full"))
shard_words = model.corpus.n_words
model.train()
model.wv.save_word2vec_format(os.path.join(out_dir, f"rank{{rank}}.bin"), binary=True)
np.save(os.path.join(out_dir, f"out{{rank}}.npy"), model.syn1neg)
np.save(os.path.join(out_dir, f"stats{{rank}}.npy"),
        np.array([model.train_stats_["raw_words"], model.train_stats_["syncs"], shard_words]))

# one short epoch, to compare with one process trained on the whole corpus (the test does that), recording
# what each chunk is trained with: its tokens, learning rates, subsampling and noise table
kernel = _kernel.train_chunk
seen = []
_kernel.train_chunk = recording(kernel, seen)
short = Word2Vec(**{{**params, **SHORT}}).build_vocab(sents, workdir=os.path.join(out_dir, "short"))
short.train()
np.save(os.path.join(out_dir, f"short{{rank}}.npy"), short.wv.vectors)
with open(os.path.join(out_dir, f"chunks{{rank}}.pkl"), "wb") as fh:
    pickle.dump(seen, fh)

# a second run, in which rank 1 dies at its 10th chunk
calls = []

def dying(*args):
    calls.append(1)
    if rank == 1 and len(calls) == 10:
        print("rank 1 dies", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return kernel(*args)

_kernel.train_chunk = dying
Word2Vec(epochs=100, **params).build_vocab(sents, workdir=os.path.join(out_dir, "dying")).train()
distributed.shutdown()
"""


def test_two_gloo_processes_agree_and_a_killed_one_is_named(tmp_path, monkeypatch):
    script = tmp_path / "worker.py"
    source = {"planted": inspect.getsource(planted_sentences), "recording": inspect.getsource(recording)}
    script.write_text(WORKER.format(**source, params=PARAMS, short=SHORT))
    timeout = 5
    # torchrun's agent would stop the survivor as soon as it saw the death; a slow agent monitor stands
    # for a worker lost on another machine, which no local agent sees: the survivor must notice by itself.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["--monitor-interval", "120", str(script), str(tmp_path), str(timeout)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    died_at, lost, lines = None, [], []
    deadline = time.monotonic() + 180
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("rank 1 dies"):
                died_at = time.monotonic()
            if line.startswith("gatelab: error: lost rank"):
                lost.append((time.monotonic(), line.strip()))
                break
            assert time.monotonic() < deadline, "no lost-rank line within 180 s"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert died_at is not None and len(lost) == 1, "".join(lines)[-3000:]
    seen_at, line = lost[0]
    assert line.startswith("gatelab: error: lost rank 1 of 2"), line
    assert seen_at - died_at < timeout + 5

    a = KeyedVectors.load_word2vec_format(tmp_path / "rank0.bin")
    b = KeyedVectors.load_word2vec_format(tmp_path / "rank1.bin")
    assert a.index_to_key == b.index_to_key  # one vocabulary, counted on rank 0
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "out0.npy"), np.load(tmp_path / "out1.npy"), atol=1e-6)
    (raw, syncs, shard0), (_, _, shard1) = np.load(tmp_path / "stats0.npy"), np.load(tmp_path / "stats1.npy")
    # each rank encoded only its shard: every 2nd chunk of 250-1000 words, about half the corpus
    assert shard0 + shard1 == 2000 * 12 and abs(int(shard0) - int(shard1)) <= 1000
    assert raw == 3 * 2000 * 12 and syncs > 1  # all words of both shards, several syncs
    # the averaged model still learned the planted groups
    sims = a.unit_vectors()
    g0 = [a.key_to_index[f"g0w{i}"] for i in range(8)]
    g1 = [a.key_to_index[f"g1w{i}"] for i in range(8)]
    assert (sims[g0] @ sims[g0].T).mean() > (sims[g0] @ sims[g1].T).mean() + 0.3

    # Two processes learn as much as one from the same words: a merge keeps every update, after every round
    # of one chunk per thread. Here the group margin is 0.618 against 0.617 for one process; merging after
    # rounds of 4 chunks (the former schedule) gave 0.551, averaging the models instead of summing the changes 0.350.
    sents, vocab = planted_sentences(n_sentences=2000)
    seen = []
    monkeypatch.setattr(_kernel, "train_chunk", recording(_kernel.train_chunk, seen))
    one = Word2Vec(sents, **{**PARAMS, **SHORT})
    # each rank trains its chunks with the learning rates, subsampling and noise table one process uses there
    ranks = []
    for r in (0, 1):
        with open(tmp_path / f"chunks{r}.pkl", "rb") as fh:
            ranks.append(pickle.load(fh))
    assert len(seen) > 50 and ranks[0] + ranks[1] == seen[0::2] + seen[1::2]
    two = KeyedVectors(one.wv.index_to_key, np.load(tmp_path / "short0.npy"))
    np.testing.assert_allclose(two.vectors, np.load(tmp_path / "short1.npy"), atol=1e-6)
    margin_one, margin_two = (np.subtract(*group_margin(kv, vocab)) for kv in (one.wv, two))
    assert abs(margin_two - margin_one) < TOLERANCE, (margin_two, margin_one)


def test_cli_hands_its_timeout_to_the_distributed_layer(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("gatelab.distributed.init", lambda timeout, device: seen.append((timeout, device)))
    with pytest.raises(SystemExit):
        main(["word2vec", "train", "c.txt", "--out", str(tmp_path / "v.bin"), "--dist-timeout", "0"])
    assert main(["word2vec", "train", "no-such-corpus", "--out", str(tmp_path / "v.bin"), "--dist-timeout", "7"]) == 2
    assert seen == [(7.0, "cpu")]
