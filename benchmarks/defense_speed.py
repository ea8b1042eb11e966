"""Time to purify MNIST test images: Defense-VAE (one encoder and decoder pass) against the Defense-GAN-style
projection through the same VAE's decoder (L steps x R restarts of gradient descent on z), in one run.

    python benchmarks/defense_speed.py [--images 1000] [--vae vae.safetensors] [--classifier classifier.safetensors]

Without files, classifier A is trained for one epoch on 10,000 training images and a Defense-VAE for --epochs
epochs on FGSM (eps 0.3) pairs of the last --pairs training images (neither timed). Both purifiers then clean the
first --images test images and their FGSM (eps 0.3, white-box on the unchanged classifier, oblivious to the purifier)
versions; the purification of the clean images is timed, and the unchanged classifier's accuracy on all four purified
sets printed. L x R decoder passes per image make the projection slow on a CPU: scale it with --images.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from gatelab.data import mnist_tensors
from gatelab.defense import (
    ClassifierConfig,
    DefenseVAE,
    ProjectionPurifier,
    VAEConfig,
    accuracy,
    attack,
    load_classifier,
    train_classifier,
)
from gatelab.options import nonnegative_int, positive_int

EPS = 0.3


def _timed(fn) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=positive_int, default=1000, help="test images to purify (default: 1000)")
    parser.add_argument("--pairs", type=positive_int, default=5000, help="FGSM training pairs (default: 5000)")
    parser.add_argument("--epochs", type=positive_int, default=3, help="Defense-VAE training epochs (default: 3)")
    parser.add_argument("--vae", help="Defense-VAE file from DefenseVAE.save (default: train one)")
    parser.add_argument("--classifier", help="classifier file from train-classifier (default: train model A)")
    parser.add_argument("--steps", type=nonnegative_int, default=200, help="projection steps L (default: 200)")
    parser.add_argument("--restarts", type=positive_int, default=10, help="projection restarts R (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and of the restarts (default: 0)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    if args.classifier:
        net, _ = load_classifier(args.classifier)
    else:
        net, _ = train_classifier(ClassifierConfig(epochs=1, train_examples=10000, seed=args.seed), quiet=True)
    if args.vae:
        vae = DefenseVAE.load(args.vae)
    else:
        x, y = mnist_tensors("mnist", "train")
        clean, labels = x[-args.pairs :], y[-args.pairs :]  # training images; the test images are only purified
        adversarial = attack(net, clean, labels, "fgsm", EPS)
        vae = DefenseVAE(VAEConfig(epochs=args.epochs), seed=args.seed).fit(adversarial, clean)
    xt, yt = mnist_tensors("mnist", "test")
    xt, yt = xt[: args.images], yt[: args.images]
    adversarial = attack(net, xt, yt, "fgsm", EPS)
    projection = ProjectionPurifier(vae, steps=args.steps, restarts=args.restarts, seed=args.seed)

    vae_clean, vae_seconds = _timed(lambda: vae.purify(xt))
    proj_clean, proj_seconds = _timed(lambda: projection.purify(xt))
    rows = {
        "none": (None, accuracy(net, xt, yt), accuracy(net, adversarial, yt)),
        "Defense-VAE": (vae_seconds, accuracy(net, vae_clean, yt), accuracy(net, vae.purify(adversarial), yt)),
        f"projection L={args.steps} R={args.restarts}": (
            proj_seconds,
            accuracy(net, proj_clean, yt),
            accuracy(net, projection.purify(adversarial), yt),
        ),
    }

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, load average {load}, torch {torch.__version__}"
    )
    print(f"purifying {len(xt)} MNIST test images (seconds: the clean set); FGSM eps {EPS}, white-box, oblivious")
    print(f"{'purifier':<30}{'seconds':>10}{'clean acc':>11}{'FGSM acc':>10}")
    for name, (sec, clean_acc, fgsm_acc) in rows.items():
        shown = "-" if sec is None else f"{sec:.3f}"
        print(f"{name:<30}{shown:>10}{clean_acc:>11.3f}{fgsm_acc:>10.3f}")
    print(f"projection / Defense-VAE time: {proj_seconds / vae_seconds:.1f}x")


if __name__ == "__main__":
    main()
