"""Why NICE's explanations lose to gradient saliency under the blurred reference: scores beside controls.

    python tools/nice_blur_reference.py RUN_DIR [--lam L]

Reads a finished `gatelab reproduce nice-mnist` or `nice-fmnist` run: its
classifier, its explanation network at the chosen strength (or --lam) and the
validation images it was chosen on (the test split is not read). For each
reference (black, and RISE's blurred copy) it scores deletion and insertion of
NICE and gradient saliency beside controls: saliency on the object's pixels
only (its background ranked last), how much a pixel changes when removed,
|x - reference|, and each map times that change. For each ranking's top 10% of
pixels it prints the share of the image's total change they remove and the
share of them that is background. A removed background pixel is a no-op
against black but turns grey against the blur, so a mask trained against black
has no reason to rank it; the ink-only saliency shows what that costs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gatelab.data import image_splits
from gatelab.evaluation import predict
from gatelab.nice.classifiers import load_classifier
from gatelab.nice.masks import NICE
from gatelab.nice.metrics import REFERENCES, attribute, compare, reference_images

TOP = 0.10  # the share of pixels, by each ranking, whose change and background share are reported
INK = 0.1  # pixels brighter than this are the object's; the rest are background


def _top(values: torch.Tensor, ranking: torch.Tensor) -> torch.Tensor:
    """``values`` (N, 1, H, W) at each image's top ``TOP`` share of pixels by ``ranking``: (N, k)."""
    ranking = ranking.flatten(1)
    return values.flatten(1).gather(1, ranking.topk(round(TOP * ranking.shape[1]), dim=1).indices)


def removed_share(change: torch.Tensor, ranking: torch.Tensor) -> float:
    """Mean share of each image's total change that its top pixels by ``ranking`` remove."""
    return float((_top(change, ranking).sum(1) / change.flatten(1).sum(1).clamp(min=1e-12)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the folder of a finished nice-mnist or nice-fmnist reproduction")
    parser.add_argument("--lam", type=float, help="the explanation strength (default: the one the run chose)")
    args = parser.parse_args()
    results = json.loads((args.run / "results.json").read_text())
    s, seed = results["settings"], results["seed"]
    lam = args.lam if args.lam is not None else results["results"]["chosen_explain_lam"]
    classifier, _ = load_classifier(args.run / "classifier.safetensors")
    explainer = NICE.load(args.run / f"masks-zeros-lam{lam:g}.safetensors", classifier)
    _, _, xv, _ = image_splits(s["dataset"], s["val_size"], seed, s["train_examples"])
    xv = xv[: s["explain_images"]]
    predicted = predict(classifier, xv)
    nice = explainer.saliency(xv)
    saliency = attribute(classifier, xv, predicted, "saliency", absolute=True)
    ink = (xv > INK).to(xv.dtype)
    print(f"{s['dataset']}, {len(xv)} validation images, NICE lambda {lam:g}")
    for reference in REFERENCES:
        change = (xv - reference_images(reference, xv)).abs()
        maps = {
            "NICE": nice,
            "saliency": saliency,
            "saliency, ink only": saliency * ink,
            "change |x - ref|": change,
            "saliency x change": saliency * change,
            "NICE x change": nice * change,
        }
        scores = compare(classifier, xv, predicted, maps, random_control=False, reference=reference)
        print(f"\n{reference} reference        deletion  insertion  top {TOP:.0%}: change removed, background pixels")
        for name, sc in scores.items():
            share, background = removed_share(change, maps[name]), float(_top(1.0 - ink, maps[name]).mean())
            print(f"  {name:20s}{sc['deletion_auc']:8.3f}{sc['insertion_auc']:11.3f}{share:14.1%}{background:12.1%}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
