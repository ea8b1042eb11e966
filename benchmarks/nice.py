"""Time to explain images: NICE's amortised mask network against Captum's gradient saliency,
Integrated Gradients and occlusion, and NICE's per-image optimisation, on the same MNIST images.

    python benchmarks/nice.py [--images 1000] [--masks masks.safetensors --classifier classifier.safetensors]

Without files, a classifier is trained for one epoch and a mask network for one
epoch on 10,000 images first (not timed): the explanation cost of the amortised
network does not depend on how well it was trained. Each method explains the
classifier's predicted class; the table gives seconds and the ratio to NICE.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from gatelab.data import mnist_tensors
from gatelab.nice import (
    BASELINES,
    NICE,
    ClassifierConfig,
    NICEConfig,
    attribute,
    load_classifier,
    predict,
    train_classifier,
)
from gatelab.options import positive_int


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=positive_int, default=1000, help="test images to explain (default: 1000)")
    parser.add_argument("--classifier", help="classifier file from `gatelab nice train-classifier`")
    parser.add_argument("--masks", help="mask network from `gatelab nice train`")
    args = parser.parse_args()

    torch.manual_seed(0)
    if args.classifier:
        classifier, _ = load_classifier(args.classifier)
    else:
        classifier, _ = train_classifier(ClassifierConfig(epochs=1, train_examples=10000), quiet=True)
    if args.masks:
        nice = NICE.load(args.masks, classifier)
    else:
        x, _ = mnist_tensors("mnist", "train")
        nice = NICE(classifier, NICEConfig(epochs=1, train_examples=10000)).fit(x, quiet=True)
    xt, _ = mnist_tensors("mnist", "test")
    xt = xt[: args.images]
    predicted = predict(classifier, xt)

    times = {"NICE (amortised)": _seconds(lambda: nice.saliency(xt))}
    for method in BASELINES:
        times[f"captum {method}"] = _seconds(lambda m=method: attribute(classifier, xt, predicted, m))
    per_image = NICE(classifier, NICEConfig(mode="per_image", steps=300))
    sample = xt[:100]
    times["NICE per-image (300 steps)"] = _seconds(lambda: per_image.saliency(sample)) * len(xt) / len(sample)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    print(f"explaining {len(xt)} MNIST test images (per-image NICE timed on 100 and scaled)")
    base = times["NICE (amortised)"]
    print(f"{'method':<30}{'seconds':>10}{'x NICE':>10}")
    for name, sec in times.items():
        print(f"{name:<30}{sec:>10.3f}{sec / base:>10.1f}")


if __name__ == "__main__":
    main()
