"""``gatelab defense``: train a classifier, fit Defense-VAE on adversarial pairs, evaluate under attack, purify.

Trainers keep a checkpoint at ``OUT.checkpoint.pt`` (each epoch, and every ``--checkpoint-every`` s) and continue from
one with ``--resume``; ``train`` also keeps its (adversarial, clean) pairs in resumable shards (``--pairs``). The test
split is read once, after training, for the final number. ``evaluate`` and ``purify`` fill their output folder under
a temporary name and rename it when complete, so a failure leaves no half-filled folder.
"""

from __future__ import annotations

import argparse

from gatelab.checkpoint import checkpoint_beside
from gatelab.options import (
    add_common,
    add_image_training,
    nonnegative_float,
    positive_float,
    positive_int,
    unit_interval,
)


def _attack_arguments(p: argparse.ArgumentParser, attacks: tuple[str, ...], eps: tuple[float, ...]) -> None:
    from gatelab.defense import ATTACKS

    p.add_argument(
        "--attacks",
        nargs="+",
        choices=ATTACKS,
        default=list(attacks),
        metavar="ATTACK",
        help=f"attacks, white-box on the classifier ({', '.join(ATTACKS)}) (default: {' '.join(attacks)})",
    )
    p.add_argument(
        "--eps",
        nargs="+",
        type=unit_interval,
        default=list(eps),
        help=f"attack strengths in [0, 1] (images are in [0, 1]) (default: {' '.join(map(str, eps))})",
    )


def _check_attacks(attacks: list[str], eps: list[float]) -> None:
    """Refuse, before any work, an attack that cannot run at one of the eps (the library would only find out
    partway through)."""
    from gatelab.defense.attacks import RAND_FGSM_ALPHA, cw_lr
    from gatelab.errors import GatelabError

    if "rand_fgsm" in attacks and min(eps) < RAND_FGSM_ALPHA:
        raise GatelabError(
            f"rand_fgsm takes a random step of {RAND_FGSM_ALPHA} first, so every eps must be >= {RAND_FGSM_ALPHA}; "
            f"got {' '.join(map(str, eps))}"
        )
    if {"cw", "cw_softmax"} & set(attacks):
        for e in eps:
            cw_lr(e)


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--classifier", required=True, help="classifier file from `gatelab defense train-classifier` (required)"
    )
    p.add_argument("--vae", required=True, help="purifier file from `gatelab defense train` (required)")


def register(sub: argparse._SubParsersAction) -> None:
    from gatelab.data import IMAGE_DATASETS
    from gatelab.defense import ATTACKS, NAMES, ClassifierConfig, EndToEndConfig, VAEConfig
    from gatelab.defense.evaluate import WHITE_BOX
    from gatelab.defense.pairs import PAPER_ATTACKS, PAPER_EPS

    c, v = ClassifierConfig(), VAEConfig()
    defense = sub.add_parser(
        "defense",
        help="Defense-VAE: purge adversarial perturbations with a VAE before classifying",
        description="Defense-VAE (Li & Ji, arXiv:1812.06570): a VAE trained on (adversarial, clean) pairs purifies "
        "images before an unchanged classifier sees them.",
    )
    cmds = defense.add_subparsers(dest="defense_command", metavar="COMMAND", required=True)

    t = cmds.add_parser(
        "train-classifier",
        help="train one of Defense-GAN's classifiers A-E on MNIST or Fashion-MNIST",
        description="Train a classifier to defend, keeping the epoch with the lowest error on a validation split of "
        "the training images; writes safetensors with its config and test accuracy.",
    )
    add_image_training(t, c.epochs, c.batch_size, c.lr)
    t.add_argument("--model", choices=NAMES, default=c.model, help=f"classifier architecture (default: {c.model})")
    t.add_argument("--dataset", choices=IMAGE_DATASETS, default=c.dataset, help=f"data set (default: {c.dataset})")
    t.add_argument(
        "--val-size",
        type=positive_int,
        default=c.val_size,
        help=f"training images held out to choose the epoch (default: {c.val_size})",
    )
    t.add_argument(
        "--vae",
        default=None,
        help="Defense-VAE mode 2: train on this purifier's reconstructions of the images (default: the images)",
    )
    t.add_argument(
        "--adversarial",
        action="store_true",
        help="PGD adversarial training (Madry et al.): eps 0.3, --pgd-steps steps of --pgd-alpha (default: off)",
    )
    t.add_argument("--pgd-steps", type=positive_int, default=40, help="PGD steps of --adversarial (default: 40)")
    t.add_argument("--pgd-alpha", type=positive_float, default=0.01, help="PGD step of --adversarial (default: 0.01)")
    t.add_argument(
        "--init", default=None, help="--adversarial: start from this classifier file (default: from scratch)"
    )
    t.add_argument("--out", default="classifier.safetensors", help="output file (default: classifier.safetensors)")
    t.set_defaults(func=_train_classifier)

    f = cmds.add_parser(
        "fine-tune",
        help="Defense-VAE mode 3: fine-tune purifier and classifier together, the classification loss added",
        description="End-to-end fine-tuning of a Defense-VAE and its classifier on the (adversarial, clean) pairs "
        "of `gatelab defense train` (its --pairs folder; --train-examples N: a seeded random N of them); "
        "writes both.",
    )
    f_defaults = EndToEndConfig()
    add_image_training(f, f_defaults.epochs, f_defaults.batch_size, f_defaults.lr)
    _model_arguments(f)
    f.add_argument("--pairs", required=True, metavar="DIR", help="pairs folder of `gatelab defense train` (required)")
    f.add_argument(
        "--weight",
        type=positive_float,
        default=f_defaults.weight,
        help=f"weight of the classification loss against the summed BCE (default: {f_defaults.weight})",
    )
    f.add_argument("--out", default="mode-3-vae.safetensors", help="purifier file (default: mode-3-vae.safetensors)")
    f.add_argument(
        "--out-classifier",
        default="mode-3-classifier.safetensors",
        help="classifier file (default: mode-3-classifier.safetensors)",
    )
    f.set_defaults(func=_fine_tune)

    m = cmds.add_parser(
        "train",
        help="generate (adversarial, clean) pairs against a classifier and fit Defense-VAE on them",
        description="Attack every training image outside the classifier's validation split with each attack at "
        "each eps (shards kept in --pairs, so a killed run continues), then fit the VAE18 purifier on the pairs.",
    )
    add_image_training(m, v.epochs, v.batch_size, v.lr)
    m.add_argument(
        "--classifier", required=True, help="classifier file from `gatelab defense train-classifier` (required)"
    )
    m.add_argument(
        "--dataset", choices=IMAGE_DATASETS, default=None, help="training images (default: the classifier's data set)"
    )
    _attack_arguments(m, PAPER_ATTACKS, PAPER_EPS)
    m.add_argument("--latent", type=positive_int, default=v.latent, help=f"latent size (default: {v.latent})")
    m.add_argument("--r", type=nonnegative_float, default=v.r, help=f"KL weight (default: {v.r}, as the authors' code)")
    m.add_argument(
        "--pairs", default=None, metavar="DIR", help="folder of the resumable pair shards (default: OUT.pairs)"
    )
    m.add_argument("--out", default="defense-vae.safetensors", help="output file (default: defense-vae.safetensors)")
    m.set_defaults(func=_train_vae)

    e = cmds.add_parser(
        "evaluate",
        help="accuracy under attack, undefended and through the purifier; JSON and PNG",
        description="Accuracy on the first --count test images: clean and under each attack at each eps, crafted "
        "white-box on the classifier, undefended and through Defense-VAE; with --adaptive also PGD through the "
        "purifier. Writes results.json and accuracy.png.",
    )
    add_common(e)
    _model_arguments(e)
    e.add_argument(
        "--dataset", choices=IMAGE_DATASETS, default=None, help="test images (default: the classifier's data set)"
    )
    e.add_argument("--count", type=positive_int, default=1000, help="first N test images (default: 1000)")
    _attack_arguments(e, WHITE_BOX, (0.3,))
    e.add_argument(
        "--adaptive", action="store_true", help="also PGD (40 steps) through purifier and classifier (default: off)"
    )
    e.add_argument(
        "--adaptive-count",
        type=positive_int,
        default=None,
        help="attack only the first N images with the adaptive PGD (default: all --count)",
    )
    e.add_argument("--mode2", default=None, help="a mode-2 classifier file: one more column (default: none)")
    e.add_argument(
        "--mode3",
        nargs=2,
        default=None,
        metavar=("CLASSIFIER", "VAE"),
        help="the two files of `gatelab defense fine-tune`: one more column (default: none)",
    )
    e.add_argument(
        "--pgd-trained", default=None, help="an adversarially trained classifier file: one more column (default: none)"
    )
    e.add_argument(
        "--black-box",
        action="store_true",
        help="also FGSM from a Papernot substitute (model E) trained on the last 150 test images (default: off)",
    )
    e.add_argument(
        "--out", default="defense-eval", help="output folder, replaced when complete (default: defense-eval)"
    )
    e.set_defaults(func=_evaluate)

    p = cmds.add_parser(
        "purify",
        help="purified images and a panel: clean, adversarial, purified, with predictions",
        description="Purify image files or a data set's first --count test images (optionally their adversarial "
        "versions, --attack) and draw a panel with the classifier's predictions.",
    )
    add_common(p)
    _model_arguments(p)
    p.add_argument(
        "--attack", choices=ATTACKS, default=None, help="purify this attack's adversarial images (default: none)"
    )
    p.add_argument("--eps", type=unit_interval, default=0.3, help="strength of --attack, in [0, 1] (default: 0.3)")
    p.add_argument("--count", type=positive_int, default=10, help="data set inputs: how many test images (default: 10)")
    p.add_argument("--invert", action="store_true", help="image files are dark on light; invert them (default: off)")
    p.add_argument("--panels", type=positive_int, default=10, help="images drawn in the panel figure (default: 10)")
    p.add_argument(
        "--out", default="defense-purified", help="output folder, replaced when complete (default: defense-purified)"
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_DATASET",
        help=f"image files, or one data set name ({', '.join(IMAGE_DATASETS)}) for its test images",
    )
    p.set_defaults(func=_purify)


def _train_classifier(args) -> int:
    from gatelab.data import mnist_tensors
    from gatelab.defense import (
        AdversarialConfig,
        ClassifierConfig,
        DefenseVAE,
        adversarial_training,
        load_classifier,
        save_classifier,
        train_classifier,
    )
    from gatelab.errors import GatelabError
    from gatelab.evaluation import accuracy
    from gatelab.files import check_output_path

    if args.vae and args.adversarial:
        raise GatelabError("--vae (mode 2) and --adversarial are two different trainings; pass one of them")
    if args.init and not args.adversarial:
        raise GatelabError("--init is the starting point of --adversarial; pass --adversarial too")
    config = (AdversarialConfig if args.adversarial else ClassifierConfig)(
        model=args.model,
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        train_examples=args.train_examples,
        val_size=args.val_size,
        seed=args.seed,
        device=args.device,
        **({"steps": args.pgd_steps, "alpha": args.pgd_alpha} if args.adversarial else {}),
    ).validate()
    check_output_path(args.out)
    trainer = {
        "quiet": args.quiet,
        "checkpoint": checkpoint_beside(args.out),
        "checkpoint_every": args.checkpoint_every,
        "resume": args.resume,
        "log_dir": args.log_dir,
    }
    if args.adversarial:
        init = load_classifier(args.init, args.device)[0] if args.init else None
        model, history = adversarial_training(config, init=init, **trainer)
    else:
        purifier = DefenseVAE.load(args.vae, args.device) if args.vae else None
        model, history = train_classifier(config, purifier=purifier, **trainer)
    xt, yt = mnist_tensors(config.dataset, "test")  # read once, for the final number
    acc = accuracy(model, xt.to(args.device), yt.to(args.device))
    save_classifier(model, config, args.out, acc)
    if args.adversarial:  # Madry keeps the last model; the validation error is only logged
        best = 1 - history[-1]["validation_error"] / 100
    else:
        best = max(h["validation_accuracy"] for h in history)
    what = " on reconstructions" if args.vae else (" (PGD adversarial training)" if args.adversarial else "")
    print(
        f"model {config.model} on {config.dataset}{what}: validation accuracy {100 * best:.2f}%, "
        f"test accuracy {100 * acc:.2f}%  ->  {args.out}"
    )
    return 0


def _train_vae(args) -> int:
    from dataclasses import asdict

    from gatelab.checkpoint import check_resumable, load_state
    from gatelab.data import image_splits
    from gatelab.defense import DefenseVAE, VAEConfig, load_classifier, load_pairs, make_pairs
    from gatelab.errors import GatelabError
    from gatelab.files import check_output_path
    from gatelab.training import RESUMABLE_CHANGES

    _check_attacks(args.attacks, args.eps)
    if len(set(args.attacks)) != len(args.attacks) or len(set(args.eps)) != len(args.eps):
        raise GatelabError(f"--attacks and --eps must not repeat; got {args.attacks} and {args.eps}")
    config = VAEConfig(
        latent=args.latent, r=args.r, lr=args.lr, batch_size=args.batch_size, epochs=args.epochs
    ).validate()
    pairs = f"{args.out}.pairs" if args.pairs is None else args.pairs  # "" is refused below, not the default
    check_output_path(args.out)
    check_output_path(pairs, kind="dir")
    if args.resume:  # refuse a wrong checkpoint now, not after generating the pairs
        state = load_state(args.resume, "Defense-VAE checkpoint")
        check_resumable(state, "defense-vae", asdict(config), args.resume, may_differ=RESUMABLE_CHANGES)
    classifier, cconfig = load_classifier(args.classifier, args.device)
    # the classifier's validation split (it chose its epoch, and chooses mode 2's) stays unseen by the purifier
    x, y, _, _ = image_splits(args.dataset or cconfig.dataset, cconfig.val_size, cconfig.seed, args.train_examples)
    make_pairs(classifier, x, y, pairs, args.attacks, args.eps, seed=args.seed, quiet=args.quiet)
    adversarial, clean = load_pairs(pairs)
    purifier = DefenseVAE(config, seed=args.seed, device=args.device).fit(
        adversarial,
        clean,
        checkpoint=checkpoint_beside(args.out),
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        quiet=args.quiet,
        log_dir=args.log_dir,
    )
    purifier.save(args.out)
    last = purifier.history_[-1]["loss"]
    print(f"Defense-VAE on {len(adversarial)} pairs (in {pairs}): final loss {last:.2f} per pair  ->  {args.out}")
    return 0


def _fine_tune(args) -> int:
    from gatelab.defense import EndToEndConfig, fine_tune, load_pair_labels, load_pairs, save_classifier
    from gatelab.defense.pairs import subset_rows
    from gatelab.files import check_output_path

    config = EndToEndConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight=args.weight).validate()
    check_output_path(args.out)
    check_output_path(args.out_classifier)
    classifier, cconfig, purifier = _models(args)
    adversarial, clean = load_pairs(args.pairs)
    labels = load_pair_labels(args.pairs)
    # --train-examples: a seeded random subset of the pairs (their rows are ordered by attack)
    adversarial, clean, labels = subset_rows((adversarial, clean, labels), args.train_examples, args.seed)

    net, tuned, history = fine_tune(
        classifier,
        purifier,
        adversarial,
        clean,
        labels,
        config,
        seed=args.seed,
        device=args.device,
        checkpoint=checkpoint_beside(args.out),
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        quiet=args.quiet,
        log_dir=args.log_dir,
    )
    tuned.save(args.out)
    save_classifier(net, cconfig, args.out_classifier)
    last = history[-1]
    print(
        f"mode 3 on {len(adversarial)} pairs: final loss {last['loss']:.2f}, "
        f"classification {last['classification']:.4f} per pair  ->  {args.out}, {args.out_classifier}"
    )
    return 0


def _models(args):
    """The classifier (with its config) and the purifier named by ``--classifier`` and ``--vae``."""
    from gatelab.defense import DefenseVAE, load_classifier

    classifier, cconfig = load_classifier(args.classifier, args.device)
    return classifier, cconfig, DefenseVAE.load(args.vae, args.device)


def _evaluate(args) -> int:
    from gatelab.data import mnist_tensors
    from gatelab.defense import DefenseVAE, accuracy_table_png, evaluate, load_classifier, train_substitute
    from gatelab.defense.substitute import HOLD_OUT
    from gatelab.errors import GatelabError
    from gatelab.files import atomic_dir, check_output_path, write_json

    _check_attacks(args.attacks, args.eps)
    check_output_path(args.out, kind="dir")
    if args.adaptive_count is not None and args.adaptive_count > args.count:
        raise GatelabError(f"--adaptive-count must be at most --count ({args.count}), got {args.adaptive_count}")
    classifier, cconfig, purifier = _models(args)
    dataset = args.dataset or cconfig.dataset
    x, y = mnist_tensors(dataset, "test")
    if args.count > len(x):
        raise GatelabError(f"--count must be in [1, {len(x)}] (the {dataset} test images), got {args.count}")
    defences = {}
    if args.mode2:
        defences["mode_2"] = (load_classifier(args.mode2, args.device)[0], purifier)
    if args.mode3:
        defences["mode_3"] = (
            load_classifier(args.mode3[0], args.device)[0],
            DefenseVAE.load(args.mode3[1], args.device),
        )
    if args.pgd_trained:
        defences["pgd_trained"] = (load_classifier(args.pgd_trained, args.device)[0], None)
    substitute = None
    if args.black_box:
        if args.count > len(x) - HOLD_OUT:
            raise GatelabError(
                f"--black-box keeps the last {HOLD_OUT} test images out: --count at most {len(x) - HOLD_OUT}"
            )
        substitute, _ = train_substitute(classifier, x[-HOLD_OUT:].to(args.device), quiet=args.quiet)
    x, y = x[: args.count], y[: args.count]
    table = {}
    for eps in dict.fromkeys(args.eps):
        rows = evaluate(
            classifier,
            x,
            y,
            tuple(dict.fromkeys(args.attacks)),
            eps,
            purifier,
            args.adaptive,
            seed=args.seed,
            quiet=args.quiet,
            defences=defences,
            substitute=substitute,
            adaptive_images=args.adaptive_count,
        )
        table.setdefault("clean", rows.pop("clean"))
        table.update({f"{row} eps={eps:g}": accs for row, accs in rows.items()})
    results = {
        "dataset": dataset,
        "count": args.count,
        "classifier": str(args.classifier),
        "vae": str(args.vae),
        "attacks": list(dict.fromkeys(args.attacks)),
        "eps": list(dict.fromkeys(args.eps)),
        "adaptive": args.adaptive,
        "adaptive_count": args.adaptive_count or args.count,
        "columns": {"mode_2": args.mode2, "mode_3": args.mode3, "pgd_trained": args.pgd_trained},
        "black_box": args.black_box,
        "seed": args.seed,
        "accuracy": table,
    }
    with atomic_dir(args.out) as out:
        write_json(out / "results.json", results)
        accuracy_table_png(table, out / "accuracy.png")
    print(f"accuracy (%) on the first {args.count} {dataset} test images, attacks white-box on the classifier")
    columns = list(table["clean"])
    print(f"{'row':<26}" + "".join(f"{c.replace('_', '-'):>13}" for c in columns))
    for row, accs in table.items():
        print(f"{row:<26}" + "".join(f"{100 * accs[c]:>13.2f}" for c in columns))
    print(f"results.json and accuracy.png in {args.out}")
    return 0


def _purify(args) -> int:
    from gatelab.defense import IMAGE_SHAPE, attack
    from gatelab.evaluation import predict
    from gatelab.files import atomic_dir, check_output_path
    from gatelab.nice.images import load_inputs, write_png
    from gatelab.nice.plots import explanation_panels

    if args.attack:
        _check_attacks([args.attack], [args.eps])
    check_output_path(args.out, kind="dir")
    classifier, _, purifier = _models(args)
    images, labels, names = load_inputs(args.inputs, IMAGE_SHAPE, args.count, args.invert)
    images = images.to(args.device)
    clean_pred = predict(classifier, images)
    source = images
    if args.attack:  # without labels (image files), attack the classifier's own prediction
        target = labels.to(args.device) if labels is not None else clean_pred.to(args.device)
        source = attack(classifier, images, target, args.attack, args.eps, seed=args.seed)
    purified = purifier.purify(source)
    purified_pred = predict(classifier, purified)
    shown = slice(0, min(args.panels, len(images)))
    columns = {}
    titles = [f"{n}\nclean {int(p)}" for n, p in zip(names[shown], clean_pred[shown])]
    if args.attack:
        adv_pred = predict(classifier, source)
        columns[f"{args.attack} image"] = source[shown].cpu()
        titles = [f"{t}, adv {int(a)}" for t, a in zip(titles, adv_pred[shown])]
    columns["purified image"] = purified[shown].cpu()
    titles = [f"{t}, purified {int(p)}" for t, p in zip(titles, purified_pred[shown])]
    with atomic_dir(args.out) as out:
        for name, image in zip(names, purified):
            write_png(out / "purified" / f"{name}.png", image)
        explanation_panels(out / "panel.png", images[shown].cpu(), columns, titles)
    what = f"{args.attack} eps {args.eps:g} adversarial versions of " if args.attack else ""
    print(f"purified {what}{len(images)} images; predictions unchanged from clean on ", end="")
    print(f"{int((purified_pred == clean_pred).sum())} of {len(images)}; files in {args.out}")
    return 0
