"""A long one-off fuzz run, not part of the test suite: N seeded mutations per reader, counted.

    PYTHONPATH=src python tests/fuzz/fuzz_count.py [--n 2000] [--seed 0] [--only idx-raw,png]

For each reader prints how many mutated files read fine, how many raised GatelabError, and how many
raised anything else (the target is 0), with the first traceback of each other kind and the
slowest single read. Exits 1 if anything other than GatelabError escaped.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from fuzzlib import READERS, mutate  # noqa: E402

from gatelab.errors import GatelabError  # noqa: E402


def run(name: str, n: int, seed: int, tmp: Path) -> dict:
    filename, make, header, read, post = READERS[name]
    rng = np.random.default_rng([seed, sum(name.encode())])
    base = make()
    counts = collections.Counter()
    others: dict[str, str] = {}
    slowest = 0.0
    path = tmp / filename
    for _ in range(n):
        content = post(mutate(base, header, lambda lo, hi: int(rng.integers(lo, hi + 1)), lambda k: rng.bytes(k)))
        path.write_bytes(content)
        t = time.perf_counter()
        try:
            read(path)
            counts["ok"] += 1
        except GatelabError:
            counts["GatelabError"] += 1
        except Exception as exc:  # noqa: BLE001 - counting exactly these is the point
            kind = type(exc).__name__
            counts[f"other:{kind}"] += 1
            others.setdefault(kind, "".join(traceback.format_exception(exc))[-1500:])
        slowest = max(slowest, time.perf_counter() - t)
    return {"counts": counts, "others": others, "slowest": slowest}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="")
    args = parser.parse_args(argv)
    names = [s for s in args.only.split(",") if s] or list(READERS)
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            t = time.perf_counter()
            res = run(name, args.n, args.seed, Path(tmp))
            c = res["counts"]
            other = sum(v for k, v in c.items() if k.startswith("other:"))
            bad += other
            print(
                f"{name:18s} {args.n} mutations: ok {c['ok']}, GatelabError {c['GatelabError']}, other {other} "
                f"{dict((k, v) for k, v in c.items() if k.startswith('other:')) or ''}  "
                f"({time.perf_counter() - t:.1f} s, slowest read {res['slowest'] * 1000:.0f} ms)",
                flush=True,
            )
            for kind, tb in res["others"].items():
                print(f"--- first {kind} in {name}:\n{tb}")
    print(f"non-GatelabError exceptions in total: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
