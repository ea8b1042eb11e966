"""Size against accuracy on validation images: NICE's mixed-resolution JPEG (per-pixel or block masks) beside
plain JPEG at lower qualities, all as ratios to plain JPEG at quality 75 with shared tables.

    python benchmarks/nice_frontier.py [--dataset mnist] [--cell 8] [--lam 0.5 1] [--qualities 50 30 20]
                                       [--classifier clf.safetensors] [--validation 2000] [--mode per_image]

Without --classifier, the original classifier trains for 3 epochs on the training images less a seeded
5,000-image validation split and is then fine-tuned for 2 epochs with mixed-resolution augmentation (as in
`nice-mnist`; not timed). One mask network a strength trains as in the quick reproduction (1 epoch on 10,000
training images, Adam 1e-2); with --mode per_image each image's gates are optimised instead (300 Adam steps, no
network). "Distinct" counts the different masks among the images: 1 is an image-independent mask. Every
figure comes from the first --validation images of the held-out split; the test split is never read. Issue
15's frontier (README, NICE section) came from these settings.
"""

from __future__ import annotations

import argparse
import os

import torch

from gatelab.data import IMAGE_DATASETS, image_splits
from gatelab.evaluation import accuracy
from gatelab.nice import NICE, ClassifierConfig, NICEConfig, compress, load_classifier, train_classifier
from gatelab.nice.compress import decode_jpeg, encode_jpeg, jpeg_tables
from gatelab.nice.masks import MODES
from gatelab.options import positive_float, positive_int

QUALITY = 75
VAL_SIZE = 5000


def _classifier(dataset: str, path: str | None):
    if path:
        return load_classifier(path)[0]
    base, _ = train_classifier(ClassifierConfig(dataset=dataset, val_size=VAL_SIZE), quiet=True)
    tuned = ClassifierConfig(dataset=dataset, val_size=VAL_SIZE, epochs=2, augment="mixed_resolution")
    return train_classifier(tuned, quiet=True, init=base)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=IMAGE_DATASETS, default="mnist", help="data set (default: mnist)")
    parser.add_argument("--cell", type=positive_int, default=8, help="gate size in pixels (default: 8)")
    parser.add_argument(
        "--lam", type=positive_float, nargs="+", default=[0.5, 1.0], help="L0 strengths (default: 0.5 1)"
    )
    parser.add_argument(
        "--qualities",
        type=positive_int,
        nargs="+",
        default=[50, 30, 20],
        help="plain JPEG qualities (default: 50 30 20)",
    )
    parser.add_argument(
        "--classifier", help="classifier file from `gatelab nice train-classifier` (default: train one)"
    )
    parser.add_argument(
        "--validation", type=positive_int, default=2000, help="validation images scored (default: 2000)"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="amortized",
        help="masks from a mask network or optimised for each image (default: amortized)",
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    classifier = _classifier(args.dataset, args.classifier)
    x, _, xv, yv = image_splits(args.dataset, VAL_SIZE, 0, 10000)
    xv, yv = xv[: args.validation], yv[: args.validation]
    tables = jpeg_tables(QUALITY)
    plain_blobs = encode_jpeg(xv, QUALITY, "shared")
    plain_total = sum(map(len, plain_blobs)) + len(tables)
    plain_accuracy = 100 * accuracy(classifier, decode_jpeg(plain_blobs, tables), yv)
    print(f"{args.dataset}, {len(xv)} validation images; load average {open('/proc/loadavg').read().split()[0]}")
    per_image = plain_total / len(xv)
    print(f"plain JPEG q{QUALITY}: {per_image:.0f} bytes an image (tables once), accuracy {plain_accuracy:.2f}%")
    print(f"{'what':<36} {'size / q75':>10} {'points':>8} {'pixels kept':>12} {'distinct':>9}")
    for quality in args.qualities:
        blobs, own = encode_jpeg(xv, quality, "shared"), jpeg_tables(quality)
        drop = 100 * accuracy(classifier, decode_jpeg(blobs, own), yv) - plain_accuracy
        ratio = (sum(map(len, blobs)) + len(own)) / plain_total
        print(f"{'plain JPEG q' + str(quality):<36} {ratio:>10.3f} {drop:>+8.2f}")
    for lam in args.lam:
        config = NICEConfig(
            lam=lam, background="lowres", cell=args.cell, mode=args.mode, epochs=1, lr=1e-2, lr_drop_epoch=1
        )
        masks = NICE(classifier, config).fit(x, quiet=True).mask(xv)
        result = compress(xv, masks, quality=QUALITY, tables="shared")
        drop = 100 * accuracy(classifier, result.mixed, yv) - plain_accuracy
        distinct = len(torch.unique(masks.flatten(1), dim=0))
        name = f"NICE {args.mode}, cell {args.cell}, lambda {lam:g}"
        print(f"{name:<36} {result.size_ratio:>10.3f} {drop:>+8.2f} {100 * float(masks.mean()):>11.1f}% {distinct:>9}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
