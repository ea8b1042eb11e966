"""``gatelab nice``: train a classifier, learn its masks, explain images, compress them.

Trainers keep a checkpoint at ``OUT.checkpoint.pt`` (each epoch, and every
``--checkpoint-every`` seconds) and continue from one with ``--resume``. The
test split is read once, after training, for the final number. ``explain`` and
``compress`` fill their output folder under a temporary name and rename it when
complete, so a failure leaves no half-filled folder.
"""

from __future__ import annotations

import argparse

from gatelab.checkpoint import checkpoint_beside
from gatelab.options import add_common, add_image_training, nonnegative_float, positive_int


def _quality(text: str) -> int:
    """A JPEG quality from 1 to 95, checked while parsing so no work is done before the error."""
    from gatelab.nice.compress import MAX_QUALITY

    if not text.isdigit() or not 1 <= int(text) <= MAX_QUALITY:
        raise argparse.ArgumentTypeError(f"JPEG quality must be an integer from 1 to {MAX_QUALITY}, got {text!r}")
    return int(text)


def _mask_arguments(p: argparse.ArgumentParser, default_out: str, default_lam: float) -> None:
    from gatelab.nice.masks import NICEConfig

    d = NICEConfig()
    add_common(p)
    p.add_argument(
        "--classifier", required=True, help="classifier file from `gatelab nice train-classifier` (required)"
    )
    p.add_argument(
        "--masks",
        help="mask network from `gatelab nice train` (default: none: masks are optimised per image, "
        "slower, see --lam and --steps)",
    )
    p.add_argument(
        "--lam",
        type=nonnegative_float,
        default=default_lam,
        help=f"per-image mode: L0 strength (default: {default_lam})",
    )
    p.add_argument(
        "--steps", type=positive_int, default=d.steps, help=f"per-image mode: Adam steps (default: {d.steps})"
    )
    p.add_argument(
        "--count", type=positive_int, default=1000, help="data set inputs: how many test images (default: 1000)"
    )
    p.add_argument("--invert", action="store_true", help="image files are dark on light; invert them (default: off)")
    p.add_argument("--out", default=default_out, help=f"output folder, replaced when complete (default: {default_out})")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_DATASET",
        help="image files, or one data set name (mnist, fashion-mnist) for its test images",
    )


def register(sub: argparse._SubParsersAction) -> None:
    from gatelab.data import IMAGE_DATASETS
    from gatelab.nice.classifiers import AUGMENTS, ClassifierConfig
    from gatelab.nice.compress import TABLE_MODES
    from gatelab.nice.masks import BACKGROUNDS, COMPRESS_LAM, NICE_ESTIMATORS, NICEConfig
    from gatelab.nice.metrics import BASELINES, REFERENCES

    c, d = ClassifierConfig(), NICEConfig()
    nice = sub.add_parser(
        "nice",
        help="NICE: per-pixel gates that explain a classifier and compress images",
        description="Neural Image Compression and Explanation (Li & Ji, arXiv:1908.08988).",
    )
    cmds = nice.add_subparsers(dest="nice_command", metavar="COMMAND", required=True)

    t = cmds.add_parser(
        "train-classifier",
        help="train the small CNN to explain on MNIST or Fashion-MNIST",
        description="Train the small CNN that NICE explains, keeping the epoch with the lowest error on a "
        "validation split of the training images; writes safetensors with its config and test accuracy.",
    )
    add_image_training(t, c.epochs, c.batch_size, c.lr)
    t.add_argument("--dataset", choices=IMAGE_DATASETS, default=c.dataset, help=f"data set (default: {c.dataset})")
    t.add_argument(
        "--val-size",
        type=positive_int,
        default=c.val_size,
        help=f"training images held out to choose the epoch (default: {c.val_size})",
    )
    t.add_argument(
        "--augment",
        choices=AUGMENTS,
        default=c.augment,
        help="mixed_resolution adds a copy of every image with random 8x8 cells subsampled, so that NICE's "
        f"compressed images do not surprise the classifier (default: {c.augment})",
    )
    t.add_argument(
        "--init",
        default=None,
        help="a classifier file to fine-tune from, e.g. with --augment mixed_resolution (default: train afresh)",
    )
    t.add_argument("--out", default="classifier.safetensors", help="output file (default: classifier.safetensors)")
    t.set_defaults(func=_train_classifier)

    m = cmds.add_parser(
        "train",
        help="learn the amortised mask network for a classifier",
        description="Train the mask network: per-pixel L0 gates against the fixed classifier. "
        "Larger --lam gives sparser masks.",
    )
    add_image_training(m, d.epochs, d.batch_size, d.lr)
    m.add_argument(
        "--classifier", required=True, help="classifier file from `gatelab nice train-classifier` (required)"
    )
    m.add_argument(
        "--dataset", choices=IMAGE_DATASETS, default=None, help="training images (default: the classifier's data set)"
    )
    m.add_argument("--lam", type=nonnegative_float, default=d.lam, help=f"L0 strength (default: {d.lam})")
    m.add_argument(
        "--estimator",
        choices=NICE_ESTIMATORS,
        default=d.estimator,
        help=f"gate gradient estimator (default: {d.estimator}, as in the authors' code)",
    )
    m.add_argument(
        "--background",
        choices=BACKGROUNDS,
        default=d.background,
        help="what a closed gate shows while training: black (explanation) or the low-resolution "
        f"image (compression) (default: {d.background})",
    )
    m.add_argument(
        "--lowres-factor",
        type=positive_int,
        default=d.lowres_factor,
        help=f"cell size of the low-resolution background (default: {d.lowres_factor})",
    )
    m.add_argument(
        "--cell", type=positive_int, default=d.cell, help=f"gate size in pixels; 1 is per pixel (default: {d.cell})"
    )
    m.add_argument("--out", default="masks.safetensors", help="output file (default: masks.safetensors)")
    m.set_defaults(func=_train_masks)

    e = cmds.add_parser(
        "explain",
        help="masks and baseline saliency maps for images, with PNG panels",
        description="Explain the classifier's predictions: NICE masks beside Captum baselines, "
        "PNG panels, masks as PNGs, and deletion/insertion scores in scores.json.",
    )
    _mask_arguments(e, "nice-explain", d.lam)
    e.add_argument(
        "--baselines",
        default=",".join(BASELINES),
        help=f"comma-separated Captum baselines ({', '.join(BASELINES)}), or none (default: {','.join(BASELINES)})",
    )
    e.add_argument("--panels", type=positive_int, default=10, help="images drawn in the panel figure (default: 10)")
    e.add_argument(
        "--reference",
        choices=REFERENCES,
        default="zeros",
        help="what deletion and insertion put in place of a pixel: black, or a Gaussian blur of the image as in "
        "RISE (default: zeros)",
    )
    e.set_defaults(func=_explain)

    z = cmds.add_parser(
        "compress",
        help="mixed-resolution JPEGs; prints size ratio and accuracy",
        description="Keep masked pixels at full resolution, subsample the rest, store as JPEG, "
        "and compare with plain JPEG at the same quality.",
    )
    _mask_arguments(z, "nice-compressed", COMPRESS_LAM)
    z.add_argument("--quality", type=_quality, default=75, help="JPEG quality 1-95 (default: 75)")
    z.add_argument(
        "--factor", type=positive_int, default=8, help="background subsampling factor (default: 8, JPEG's block size)"
    )
    z.add_argument(
        "--cell",
        type=positive_int,
        default=8,
        help="per-image mode: gate size in pixels; 8 switches whole JPEG blocks, 1 single pixels (default: 8)",
    )
    z.add_argument(
        "--tables",
        choices=TABLE_MODES,
        default="inline",
        help="inline: standalone .jpg files; shared: abbreviated streams plus one tables.jpg (default: inline)",
    )
    z.set_defaults(func=_compress)


def _train_classifier(args) -> int:
    from gatelab.data import mnist_tensors
    from gatelab.evaluation import accuracy
    from gatelab.files import check_output_path
    from gatelab.nice.classifiers import ClassifierConfig, load_classifier, save_classifier, train_classifier

    config = ClassifierConfig(
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        train_examples=args.train_examples,
        val_size=args.val_size,
        augment=args.augment,
        seed=args.seed,
        device=args.device,
    ).validate()
    check_output_path(args.out)
    init = load_classifier(args.init)[0] if args.init else None
    model, history = train_classifier(
        config,
        init=init,
        quiet=args.quiet,
        checkpoint=checkpoint_beside(args.out),
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        log_dir=args.log_dir,
    )
    xt, yt = mnist_tensors(config.dataset, "test")  # read once, for the final number
    acc = accuracy(model, xt, yt)
    save_classifier(model, config, args.out, acc)
    best = min(h["validation_error"] for h in history)
    print(f"{config.dataset} classifier: validation error {best:.2f}%, test accuracy {100 * acc:.2f}%  ->  {args.out}")
    return 0


def _train_masks(args) -> int:
    from gatelab.data import mnist_tensors
    from gatelab.files import check_output_path
    from gatelab.nice.classifiers import load_classifier
    from gatelab.nice.masks import NICE, NICEConfig

    check_output_path(args.out)
    classifier, cconfig = load_classifier(args.classifier, args.device)
    config = NICEConfig(
        device=args.device,
        lam=args.lam,
        estimator=args.estimator,
        background=args.background,
        lowres_factor=args.lowres_factor,
        cell=args.cell,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_drop_epoch=max(1, args.epochs // 2),
        train_examples=args.train_examples,
        seed=args.seed,
    ).validate()
    dataset = args.dataset or cconfig.dataset
    x, _ = mnist_tensors(dataset, "train")
    nice = NICE(classifier, config).fit(
        x,
        quiet=args.quiet,
        checkpoint=checkpoint_beside(args.out),
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        log_dir=args.log_dir,
    )
    nice.save(args.out)
    xt, _ = mnist_tensors(dataset, "test")  # read once, for the final number
    density = float(nice.mask(xt[:1000]).mean())
    print(f"mask network -> {args.out}; on 1000 test images the masks keep {100 * density:.1f}% of pixels")
    return 0


def _nice_for(args, **per_image):
    """The classifier, a NICE that masks its inputs, and the inputs with labels and names; ``per_image`` sets
    the per-image mode's other settings (compression optimises the gates against the background it stores)."""
    from gatelab.files import check_output_path
    from gatelab.nice.classifiers import load_classifier
    from gatelab.nice.images import load_inputs
    from gatelab.nice.masks import NICE, NICEConfig

    check_output_path(args.out, kind="dir")
    classifier, _ = load_classifier(args.classifier, args.device)
    if args.masks:
        nice = NICE.load(args.masks, classifier, args.device)
    else:
        config = NICEConfig(
            mode="per_image", device=args.device, lam=args.lam, steps=args.steps, seed=args.seed, **per_image
        )
        nice = NICE(classifier, config.validate())
    shape = nice.input_shape_ or (1, 28, 28)
    images, labels, names = load_inputs(args.inputs, shape, args.count, args.invert)
    return classifier, nice, images, labels, names


def _explain(args) -> int:
    from gatelab.errors import GatelabError
    from gatelab.evaluation import predict
    from gatelab.files import atomic_dir, write_json
    from gatelab.nice.images import write_png
    from gatelab.nice.metrics import BASELINES, attribute, compare, plot_curves
    from gatelab.nice.plots import explanation_panels

    baselines = [b for b in args.baselines.split(",") if b and b != "none"]
    for b in baselines:
        if b not in BASELINES:
            raise GatelabError(f"unknown baseline {b!r}; accepted: {', '.join(BASELINES)} or none")
    classifier, nice, images, _, names = _nice_for(args)
    predictions = predict(classifier, images)
    masks, saliency = nice.explain(images)
    shown = slice(0, min(args.panels, len(images)))
    columns = {"NICE mask": masks[shown], "NICE P(open)": saliency[shown]}
    for b in baselines:
        columns[b] = attribute(classifier, images[shown], predictions[shown], b, absolute=True)
    scores = compare(
        classifier,
        images,
        predictions,
        {"nice": saliency},
        methods=baselines,
        seed=args.seed,
        reference=args.reference,
        attribute_kw={"absolute": True},
    )
    summary = {name: {k: v for k, v in s.items() if k != "curves"} for name, s in scores.items()}
    density = float(masks.mean())
    with atomic_dir(args.out) as out:
        for name, mask in zip(names, masks):
            write_png(out / "masks" / f"{name}.png", mask)
        explanation_panels(
            out / "panels.png",
            images[shown],
            columns,
            [f"{n} -> {int(p)}" for n, p in zip(names[shown], predictions[shown])],
        )
        plot_curves(scores, out / "deletion_insertion.png")
        write_json(
            out / "scores.json",
            {"images": len(images), "mask_density": density, "reference": args.reference, "scores": summary},
        )
    print(f"{len(images)} images, masks keep {100 * density:.1f}% of pixels; outputs in {args.out}")
    print(f"{'method':<22}{'deletion AUC (low)':>20}{'insertion AUC (high)':>22}   {args.reference} reference")
    for name, s in summary.items():
        print(f"{name:<22}{s['deletion_auc']:>20.3f}{s['insertion_auc']:>22.3f}")
    return 0


def _compress(args) -> int:
    from gatelab.evaluation import accuracy, predict
    from gatelab.files import atomic_dir
    from gatelab.nice.compress import compress, save_jpegs

    classifier, nice, images, labels, names = _nice_for(
        args, background="lowres", lowres_factor=args.factor, cell=args.cell
    )
    masks = nice.mask(images)
    result = compress(images, masks, quality=args.quality, factor=args.factor, tables=args.tables)
    with atomic_dir(args.out) as out:
        save_jpegs(out, result, names)
    truth = labels if labels is not None else predict(classifier, images)
    what = "accuracy" if labels is not None else "agreement with the prediction on the original"
    print(f"{len(images)} images, masks keep {100 * float(masks.mean()):.1f}% of pixels, JPEG quality {args.quality}")
    print(
        f"size: {int(result.mixed_bytes.sum())} bytes vs plain JPEG {int(result.plain_bytes.sum())} bytes "
        f"-> ratio {result.size_ratio:.3f}"
        + (f" (+{result.tables_bytes} bytes of shared tables, counted once)" if result.tables is not None else "")
    )
    print(
        f"{what}: original {100 * accuracy(classifier, images, truth):.2f}%, plain JPEG "
        f"{100 * accuracy(classifier, result.plain, truth):.2f}%, "
        f"NICE {100 * accuracy(classifier, result.mixed, truth):.2f}%"
    )
    print(f"files in {args.out}")
    return 0
