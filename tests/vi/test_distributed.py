"""ESVI under torchrun on gloo: tokens visit every (shard, block) once a round, 2 processes match 1, a world
larger than the blocks is refused, and a killed worker is named while the survivor's checkpoint stays intact."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from gatelab.checkpoint import load_state
from gatelab.vi import LDAVI, synthetic_lda

WORKER = Path(__file__).with_name("esvi_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _torchrun(*args, monitor_interval="0.5"):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--monitor-interval",
        monitor_interval,
        str(WORKER),
        *args,
    ]


def test_two_process_esvi_matches_one_process(tmp_path):
    proc = subprocess.run(
        _torchrun("finish", str(tmp_path / "ckpt.pt")), capture_output=True, text=True, timeout=180, env=ENV
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r: json.loads((tmp_path / f"ckpt.pt.rank{r}.json").read_text()) for r in (0, 1)}
    for result in results.values():
        assert "world size 2 is larger than the 1 component blocks" in result["refused"]
    for result in results.values():  # each rank sees every block exactly once in each of the 40 rounds
        visits = result["visits"]
        assert len(visits) == 40 * 3
        assert all(sorted(visits[r * 3 : (r + 1) * 3]) == [0, 1, 2] for r in range(40))
    assert results[0]["perplexity"] == results[1]["perplexity"]
    corpus, _ = synthetic_lda(n_docs=400, n_words=100, n_topics=3, doc_length=100, alpha=0.3, eta=0.1, seed=11)
    torch.set_num_threads(1)
    single = LDAVI(3, algorithm="esvi", esvi_update="incremental", n_blocks=3, max_iter=40, local_iter=5, seed=0)
    single.fit(corpus.subset(torch.arange(340)))
    one = single.perplexity(corpus.subset(torch.arange(340, 400)))
    assert abs(results[0]["perplexity"] - one) < 0.02 * one, (results[0]["perplexity"], one)
    # the stochastic block update: every block has had one SVI step per minibatch of every shard in each of
    # the 8 rounds (shards of 170 documents, minibatches of 50: 4 each), counted on the token across ranks
    for r in (0, 1):
        run = load_state(tmp_path / f"ckpt.pt.stochastic.rank{r}")["run"]
        assert run["iteration"] == 8 and run["block_steps"] == {b: 8 * 2 * 4 for b in range(3) if b % 2 == r}
    single = LDAVI(3, algorithm="esvi", esvi_update="stochastic", n_blocks=3, max_iter=8, batch_size=50, seed=0)
    one = single.fit(corpus.subset(torch.arange(340))).perplexity(corpus.subset(torch.arange(340, 400)))
    two = results[0]["stochastic_perplexity"]
    assert abs(two - one) < 0.02 * one, (two, one)


def test_a_killed_worker_is_named_and_the_checkpoint_survives(tmp_path):
    # a slow agent monitor stands for a worker on another machine: the survivor must notice by itself
    ckpt = tmp_path / "ckpt.pt"
    proc = subprocess.Popen(
        _torchrun("kill", str(ckpt), monitor_interval="120"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        start_new_session=True,
    )
    lines, lost = [], None
    deadline = time.monotonic() + 120
    try:
        for line in proc.stdout:
            lines.append(line)
            if "gatelab: error: lost rank" in line:
                lost = line.strip()
                break
            assert time.monotonic() < deadline, "no lost-rank line within 120 s:\n" + "".join(lines)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert lost is not None and lost.startswith("gatelab: error: lost rank 1 of 2"), "".join(lines)
    state = load_state(tmp_path / "ckpt.pt.rank0")  # intact: the survivor's last round-boundary state
    assert state["format"] == "gatelab-vi-lda" and 1 <= state["run"]["iteration"] <= 3
