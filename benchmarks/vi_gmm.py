"""gatelab's Gaussian mixture VI (batch, SVI, bulk-synchronous, ESVI, ESVI-TOPK) against scikit-learn's
BayesianGaussianMixture, side by side in one run, on a SYNTHETIC seeded mixture (many components).

Same data, same K, diagonal covariances, Dirichlet weights with concentration 1/K. Prints each method's
validation and test log-likelihood per point (higher is better) and the wall-clock time it needs to reach
scikit-learn's final validation value, as a ratio of scikit-learn's time. Usage::

    python benchmarks/vi_gmm.py [--n 200000] [--components 100] [--dim 10] [--iterations 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from gatelab.vi.compare import gatelab_fit, sklearn_gmm, torchrun_fit  # noqa: E402
from gatelab.vi.data import table_splits  # noqa: E402
from gatelab.vi.gmm import GaussianMixtureVI  # noqa: E402
from gatelab.vi.synthetic import synthetic_gmm  # noqa: E402
from vi_lda import _load, report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200000)
    ap.add_argument("--components", type=int, default=100)
    ap.add_argument("--dim", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    x, _, _ = synthetic_gmm(args.n, args.components, args.dim, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "synthetic.csv"
        np.savetxt(csv, x.numpy(), delimiter=",", fmt="%.6f")
        splits = table_splits(csv, 0.1, 0.1, args.seed)
        k = args.components
        print(f"SYNTHETIC mixture: {args.n} points, K={k}, d={args.dim}; {args.iterations} iterations")
        print(f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}; load average {_load()}")
        runs, tests = {}, {}
        runs["sklearn BayesianGM"], peer = sklearn_gmm(splits.train, splits.val, k, args.iterations, args.seed)
        tests["sklearn BayesianGM"] = float(peer.score(splits.test.numpy()))
        for name, options in [
            ("gatelab batch", dict(algorithm="batch")),
            ("gatelab svi", dict(algorithm="svi", batch_size=2000)),
            ("gatelab esvi 1 proc", dict(algorithm="esvi", n_blocks=2 * args.workers)),
            ("gatelab esvi-topk25% 1 proc", dict(algorithm="esvi", n_blocks=2 * args.workers, topk=0.25)),
        ]:
            model = GaussianMixtureVI(k, max_iter=args.iterations, seed=args.seed, dtype=torch.float64, **options)
            runs[name] = gatelab_fit(model, splits.train, splits.val)
            tests[name] = model.score(splits.test)
        cli = ["vi", "gmm", str(csv), "--components", str(k), "--iterations", str(args.iterations)]
        cli += ["--seed", str(args.seed), "--blocks", str(2 * args.workers)]
        for name, extra in [
            (f"gatelab bsp {args.workers} proc", ["--algorithm", "bsp"]),
            (f"gatelab esvi {args.workers} proc", ["--algorithm", "esvi"]),
        ]:
            runs[name], metrics = torchrun_fit(cli + extra, args.workers)
            tests[name] = metrics["test_loglik_per_point"]
    report(runs, tests, "loglik", ["sklearn BayesianGM"], lower_is_better=False)
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
