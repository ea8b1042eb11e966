"""Training-step cost of the gate estimators against the dense model, and inference speed of exported models.

    python benchmarks/gates.py [--checkpoint RUN/lenet5-arm.safetensors] [--steps 30] [--profile]

Step times: one optimiser step on a batch of 128 MNIST-shaped inputs (ARM runs
its second, gradient-free pass), with the compact pass that skips closed units
and with the dense one (``skip_closed=False``), at the gates' start (half of them
open) and on the pruned LeNet-5 below. Inference: the exported LeNet-5 against the
dense LeNet-5 at batch 1 and 1,000, as a ratio. Give a trained ARM checkpoint
(``lenet5-arm.safetensors`` in an ``l0arm-lenet5`` run folder, or any
``gatelab gates train --model lenet5`` output) to time the architecture ARM
learned; without one, the gates are set to the pruned architecture that
Louizos et al. published for LeNet-5-Caffe (20-25-45-462), choosing which
units stay at random. ``--profile`` prints, first, where a dense-pass ARM step
of LeNet-5 spends its time (torch.profiler, by operator). The load average is
printed with the figures, since others may share the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F

from gatelab.gates import build_model, export, gates, sparsify, summary, train_step
from gatelab.options import positive_int


def _median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_times(model_name: str, steps: int, batch: int = 128) -> dict[str, float]:
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    dense = build_model(model_name)
    opt = torch.optim.Adam(dense.parameters(), 1e-3)

    def dense_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(dense(x), y).backward()
        opt.step()

    out = {"dense": _median_seconds(dense_step, steps)}
    for estimator in ("arm", "ar", "hard_concrete"):
        model = sparsify(build_model(model_name), "structured", estimator)
        out.update(gated_step_times(model, estimator, steps, x, y))
    return out


def gated_step_times(model, label: str, steps: int, x, y) -> dict[str, float]:
    """Seconds per train_step of a gated model, with the compact pass and with the dense one."""
    opt = torch.optim.Adam(model.parameters(), 1e-6)  # a tiny lr: the gates stay where they are
    return {
        label: _median_seconds(partial(train_step, model, x, y, opt, dataset_size=60000), steps),
        f"{label} dense pass": _median_seconds(
            partial(train_step, model, x, y, opt, dataset_size=60000, skip_closed=False), steps
        ),
    }


def profile_dense_step(steps: int) -> str:
    """torch.profiler's table of ``steps`` dense-pass ARM steps of LeNet-5 at the gates' start, by operator."""
    model = sparsify(build_model("lenet5"), "structured", "arm")
    x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    step = partial(train_step, model, x, y, torch.optim.Adam(model.parameters(), 1e-3), 60000, skip_closed=False)
    _median_seconds(step, 1)
    with torch.profiler.profile() as prof:
        for _ in range(steps):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)


def pruned_lenet(checkpoint: str | None):
    if checkpoint:
        from gatelab.gates.train import load_checkpoint

        model, config = load_checkpoint(checkpoint)
        if config.model != "lenet5":
            raise SystemExit(f"{checkpoint} holds a gated {config.model}; this benchmark times LeNet-5 checkpoints")
        return model, f"checkpoint {checkpoint}, {config.estimator} gates, {config.epochs} epochs"
    model = sparsify(build_model("lenet5"), "structured", "arm")
    with torch.no_grad():
        for g, keep in zip(gates(model), (20, 25, 45, 462)):
            order = torch.randperm(g.phi.numel())
            g.phi.fill_(-1.0)
            g.phi[order[:keep]] = 1.0
    model.eval()(torch.zeros(1, 1, 28, 28))
    return model, "published architecture 20-25-45-462 (Louizos et al., Table 1), units chosen at random"


def _load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        help="a LeNet-5 model from `gatelab gates train --model lenet5` (default: the published architecture)",
    )
    parser.add_argument("--steps", type=positive_int, default=30, help="timed steps per configuration (default: 30)")
    parser.add_argument(
        "--profile", action="store_true", help="first profile a dense-pass LeNet-5 ARM step (default: off)"
    )
    args = parser.parse_args()

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {_load()}"
    )
    if args.profile:
        print(f"\nprofile of {args.steps} dense-pass ARM steps of LeNet-5, batch 128\n{profile_dense_step(args.steps)}")
    print("\ntraining step, batch 128 (median seconds; ratio to dense)")
    for model_name in ("mlp", "lenet5"):
        t = step_times(model_name, args.steps)
        cells = "  ".join(f"{k} {v * 1e3:7.2f} ms ({v / t['dense']:.2f}x)" for k, v in t.items())
        print(f"  {model_name:7s} {cells}")

    gated, origin = pruned_lenet(args.checkpoint)
    small = export(gated).eval()
    dense = build_model("lenet5").eval()
    x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    t = gated_step_times(gated, "compact", args.steps, x, y)
    print(f"\ntraining step of the pruned LeNet-5 ({origin}), batch 128")
    print(
        f"  compact {t['compact'] * 1e3:7.2f} ms  dense pass {t['compact dense pass'] * 1e3:7.2f} ms  "
        f"speed-up {t['compact dense pass'] / t['compact']:.2f}x"
    )
    print(f"\ninference, LeNet-5: dense vs exported ({origin})")
    print(
        f"  exported architecture {summary(gated).architecture}, "
        f"{sum(p.numel() for p in small.parameters()):,} vs {sum(p.numel() for p in dense.parameters()):,} parameters"
    )
    for batch in (1, 1000):
        x = torch.rand(batch, 1, 28, 28)
        with torch.inference_mode():
            td = _median_seconds(partial(dense, x), args.steps * 3)
            te = _median_seconds(partial(small, x), args.steps * 3)
        print(f"  batch {batch:5d}: dense {td * 1e3:8.3f} ms  exported {te * 1e3:8.3f} ms  speed-up {td / te:.2f}x")
    print(_load())


if __name__ == "__main__":
    main()
