"""`gatelab lm train` against the BlackOut authors' C++ (IntelLabs/rnnlm), same settings on PTB, one run.

Both train the paper's model on PTB: sigmoid RNN, hidden 128, batch 32, BPTT 20, K = 100,
alpha = 0.4, RMSProp decay 0.999 and damping 1e-3, gradient clip 1, learning rate 0.1 (x0.7
when validation perplexity stops improving), 2 epochs, <unk> targets counted, OMP_WAIT_POLICY
PASSIVE. Each prints training words/s and test perplexity; the script prints both and their
ratios. The authors' binary is not part of gatelab: build it yourself (with MKL as its README
says, or OpenBLAS through a two-line mkl.h that includes cblas.h) and pass its path::

    python benchmarks/lm_vs_rnnlm.py --rnnlm /path/to/rnnlm [--threads 2] [--epochs 2]

Without ``--rnnlm`` only gatelab runs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = dict(hidden=128, batch=32, bptt=20, samples=100, alpha=0.4, lr=0.1, clip=1.0)


def _last_float(pattern: str, text: str) -> float:
    found = re.findall(pattern, text)
    if not found:
        raise SystemExit(f"could not find {pattern!r} in the output:\n{text[-2000:]}")
    return float(found[-1].replace(",", ""))


def run_authors(binary: str, ptb: Path, threads: int, epochs: int, work: Path, env: dict) -> dict:
    s = SETTINGS
    model = work / "rnnlm.model"
    train = [
        binary, "--train", str(ptb / "ptb.train.txt"), "--valid", str(ptb / "ptb.valid.txt"), "--rnnlm", str(model),
        "--hidden", str(s["hidden"]), "--random-seed", "1", "--min-count", "1", "--batch-size", str(s["batch"]),
        "--momentum", "0.999", "--bptt-block", str(s["bptt"]), "--lr", str(s["lr"]), "--lr-decay", "1",
        "--rmsprop-damping", "1e-3", "--max-iter", str(epochs), "--gradient-cutoff", str(s["clip"]),
        "--numcores", str(threads), "--algo", "blackout", "--alpha", str(s["alpha"]),
        "--sample-k", str(s["samples"]), "--eval-unk",
    ]  # fmt: skip
    out = subprocess.run(train, capture_output=True, text=True, env=env, cwd=work, check=True).stdout
    test = [binary, "--rnnlm", str(model), "--test", str(ptb / "ptb.test.txt"), "--numcores", str(threads)]
    test_out = subprocess.run(test + ["--eval-unk"], capture_output=True, text=True, env=env, cwd=work, check=True)
    return {
        "words_per_s": _last_float(r"words/sec: ([\d.]+)", out),
        "test_ppl": _last_float(r"PPL: ([\d.]+)", test_out.stdout),
    }


def run_gatelab(threads: int, epochs: int, work: Path, env: dict) -> dict:
    s = SETTINGS
    cmd = [
        sys.executable, "-m", "gatelab", "lm", "train", "ptb", "--out", str(work / "gatelab-model"),
        "--loss", "blackout", "--samples", str(s["samples"]), "--alpha", str(s["alpha"]), "--hidden", str(s["hidden"]),
        "--batch-size", str(s["batch"]), "--bptt", str(s["bptt"]), "--lr", str(s["lr"]), "--clip", str(s["clip"]),
        "--epochs", str(epochs), "--threads", str(threads), "--quiet",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return {
        "words_per_s": _last_float(r"\(([\d,]+) words/s\)", out),
        "test_ppl": _last_float(r"test perplexity ([\d.]+)", out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rnnlm", help="path to the authors' rnnlm binary (default: run gatelab only)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both (default: 2)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs for both (default: 2)")
    parser.add_argument("--data", default=os.environ.get("GATELAB_DATA", "../shared/data"), help="folder with ptb/")
    args = parser.parse_args()
    ptb = Path(args.data).resolve() / "ptb"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(args.threads)}
    env["OPENBLAS_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {"gatelab": run_gatelab(args.threads, args.epochs, work, env)}
        if args.rnnlm:
            results["authors' C++"] = run_authors(args.rnnlm, ptb, args.threads, args.epochs, work, env)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"PTB, {args.epochs} epochs, {args.threads} threads, load average {' '.join(load)} after the runs")
    print(f"{'':14} {'words/s':>10} {'test ppl':>9}")
    for name, r in results.items():
        print(f"{name:14} {r['words_per_s']:>10,.0f} {r['test_ppl']:>9.1f}")
    if args.rnnlm:
        ours, theirs = results["gatelab"], results["authors' C++"]
        print(
            f"gatelab / authors: speed {ours['words_per_s'] / theirs['words_per_s']:.2f}x, "
            f"test ppl {100 * (ours['test_ppl'] / theirs['test_ppl'] - 1):+.1f}%"
        )


if __name__ == "__main__":
    main()
