"""`gatelab word2vec train` in its own process: Ctrl-C with two threads stops at once, SIGKILL loses nothing saved."""

import json
import os
import signal
import sys
import time
import traceback

import pytest

from gatelab.checkpoint import load_state
from gatelab.cli import main
from gatelab.embeddings import KeyedVectors, Word2Vec

from .conftest import planted_sentences


@pytest.fixture(scope="module", autouse=True)
def compiled_kernel():
    """Load the numba kernel in this process once, so that the forked children do not each load it."""
    Word2Vec([["a", "b", "c"]], min_count=1, negative=1, vector_size=4, epochs=1, workers=1).close()


class Run:
    """``gatelab word2vec train ...`` in a forked child: a real process to signal, without a fresh interpreter's
    seconds of imports. Its stdout and stderr go to files."""

    def __init__(self, tmp_path, corpus, out, *args):
        argv = ["word2vec", "train", str(corpus), "--out", str(out), "--min-count", "1", "--size", "16"]
        argv += ["--workers", "2", "--checkpoint-every", "0.2", "--quiet", *map(str, args)]
        self.stdout, self.stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        self.pid, self.returncode = os.fork(), None
        if self.pid == 0:  # the child: run the command, never return into pytest
            code = 99
            try:
                for fd, path in ((1, self.stdout), (2, self.stderr)):
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
                sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                code = main(argv)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush(), sys.stderr.flush()
                os._exit(code)

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            assert time.monotonic() < deadline, f"still running after {timeout} s"
            time.sleep(0.02)
        return self.returncode

    def kill(self, signum):
        os.kill(self.pid, signum)

    def output(self):
        return self.stdout.read_text(), self.stderr.read_text()


def wait_for_checkpoint(path, proc, after=-1, timeout=60):
    """The position of the first checkpoint at ``path`` that is past ``after`` raw words."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.output()
        if path.exists():
            position = load_state(path)["position"]
            if position["raw_words"] > after:
                return position
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint past {after} words within {timeout} s")


def write_corpus(tmp_path, n_sentences):
    sents, _ = planted_sentences(n_sentences=n_sentences)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(" ".join(s) for s in sents) + "\n")
    return corpus, n_sentences * 12


def test_ctrl_c_with_two_workers_stops_at_once_and_resumes_where_it_stopped(tmp_path):
    corpus, n_words = write_corpus(tmp_path, 3000)
    out, ckpt = tmp_path / "v.bin", tmp_path / "v.bin.work" / "checkpoint.pt"
    run = Run(tmp_path, corpus, out, "--epochs", 2000)  # minutes of work
    before = wait_for_checkpoint(ckpt, run, after=2 * n_words)
    run.kill(signal.SIGINT)
    sent = time.monotonic()
    assert run.wait(timeout=30) == 130 and time.monotonic() - sent < 3, run.output()
    err = run.output()[1]
    assert err == f"gatelab: stopped by Ctrl-C (SIGINT); checkpoint saved to {ckpt}; resume with --resume {ckpt}\n"
    stopped = load_state(ckpt)["position"]
    assert stopped["raw_words"] >= before["raw_words"] and not out.exists()

    encoded = (tmp_path / "v.bin.work" / "corpus.int32").stat()
    run = Run(tmp_path, corpus, out, "--epochs", 2000, "--resume", ckpt)
    later = wait_for_checkpoint(ckpt, run, after=stopped["raw_words"])  # a fresh start would save epoch 1 first
    assert later["epoch"] >= stopped["epoch"]
    again = (tmp_path / "v.bin.work" / "corpus.int32").stat()
    assert (again.st_ino, again.st_mtime_ns) == (encoded.st_ino, encoded.st_mtime_ns)  # reused, not encoded anew
    run.kill(signal.SIGKILL)
    run.wait(timeout=30)
    assert load_state(ckpt)["position"]["raw_words"] >= later["raw_words"]  # the kill left it intact


def test_killed_run_resumes_from_its_checkpoint_and_finishes(tmp_path):
    corpus, n_words = write_corpus(tmp_path, 4000)
    out, ckpt = tmp_path / "v.bin", tmp_path / "v.bin.work" / "checkpoint.pt"
    run = Run(tmp_path, corpus, out, "--epochs", 10)
    wait_for_checkpoint(ckpt, run, after=0)
    run.kill(signal.SIGKILL)
    assert run.wait(timeout=30) == -signal.SIGKILL
    saved = load_state(ckpt)["position"]  # intact after SIGKILL
    assert 0 < saved["raw_words"] < 10 * n_words
    run = Run(tmp_path, corpus, out, "--epochs", 10, "--resume", ckpt)
    assert run.wait(timeout=120) == 0, run.output()
    stats = json.loads((tmp_path / "v.bin.json").read_text())["train"]
    assert stats["resumed_from_words"] == saved["raw_words"] and stats["raw_words"] == 10 * n_words
    assert f"resumed at word {saved['raw_words']}" in run.output()[0]
    assert len(KeyedVectors.load_word2vec_format(out)) == 80
    assert not (tmp_path / "v.bin.work").exists()  # the encoded corpus and checkpoint go once finished
