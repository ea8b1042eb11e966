"""``gatelab activity``: extract skeletons from video, train, evaluate and predict actions.

``train`` keeps its checkpoint at ``OUT.checkpoint.pt`` (each epoch and every ``--checkpoint-every`` seconds) and
continues from one with ``--resume``. On msr-action3d or utd-mhad it trains on the cross-subject training subjects
(with ``--keep best``, choosing the epoch on a validation split of them), and reads the test subjects once, after
training.
"""

from __future__ import annotations

import argparse

from gatelab.checkpoint import checkpoint_beside
from gatelab.options import (
    add_common,
    add_training,
    fraction,
    nonnegative_float,
    output_file,
    positive_float,
    positive_int,
    unit_interval,
)


def _data_help() -> str:
    return "msr-action3d, utd-mhad, or a folder with one subfolder of clips (videos or skeleton files) per action"


def _rate(text: str) -> float:
    value = unit_interval(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1), got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    from gatelab.activity.preprocess import CENTRES
    from gatelab.activity.protocols import MSR_SUBSETS
    from gatelab.activity.trainer import ARCHS, KEEPS, SCHEDULES, ActivityConfig

    d = ActivityConfig()
    act = sub.add_parser(
        "activity",
        help="activity recognition from RGB video: pose skeletons, then a deep BLSTM",
        description="Sarker et al. (arXiv:1812.06544): skeletons from video, a deep bidirectional LSTM trained with "
        "augmentation, dynamic frame dropout and gradient injection; ST-GCN as the peer.",
    )
    cmds = act.add_subparsers(dest="activity_command", metavar="COMMAND", required=True)

    e = cmds.add_parser(
        "extract",
        help="video(s) to skeleton .npz files, with a contact sheet of the skeleton drawn on frames",
        description="Run the MediaPipe pose estimator (pip install 'gatelab[video]') on a video or a folder of "
        "videos; skeletons are cached as .npz beside each clip and a PNG contact sheet is written beside it.",
    )
    e.add_argument("video", metavar="VIDEO_OR_FOLDER", help="a video file or a folder of videos")
    e.add_argument(
        "--min-visibility",
        type=unit_interval,
        default=0.5,
        help="landmarks below this visibility are marked missing (default: 0.5)",
    )
    e.add_argument("--no-cache", action="store_true", help="extract again even if a cached .npz exists (default: off)")
    e.add_argument("--frames", type=positive_int, default=12, help="frames on the contact sheet (default: 12)")
    add_common(e, device=False, seed=False)
    e.set_defaults(func=_extract)

    t = cmds.add_parser(
        "train",
        help="train the BLSTM (or the ST-GCN peer) on a data set or a folder of labelled clips",
        description="Train an activity classifier; writes safetensors with its config, joint layout and actions.",
    )
    add_training(t)
    t.add_argument("data", metavar="DATA", help=_data_help())
    t.add_argument("--subset", choices=tuple(MSR_SUBSETS), default="all", help="MSR Action3D subset (default: all)")
    t.add_argument(
        "--label-fraction",
        type=fraction,
        default=1.0,
        help="train on this seeded, class-stratified fraction of the training clips (default: 1.0)",
    )
    t.add_argument("--arch", choices=ARCHS, default=d.arch, help=f"model (default: {d.arch})")
    t.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"epochs (default: {d.epochs})")
    t.add_argument(
        "--batch-size", type=positive_int, default=d.batch_size, help=f"batch size (default: {d.batch_size})"
    )
    t.add_argument("--lr", type=positive_float, default=d.lr, help=f"Adam learning rate (default: {d.lr})")
    t.add_argument(
        "--hidden", type=positive_int, default=d.hidden, help=f"BLSTM units a direction (default: {d.hidden})"
    )
    t.add_argument("--layers", type=positive_int, default=d.layers, help=f"BLSTM layers (default: {d.layers})")
    t.add_argument(
        "--ensemble",
        type=positive_int,
        default=d.ensemble,
        help="models trained side by side from different initialisations, their probabilities averaged "
        f"(default: {d.ensemble})",
    )
    t.add_argument(
        "--frames", type=positive_int, default=d.frames, help=f"frames per resampled clip (default: {d.frames})"
    )
    t.add_argument(
        "--val-size",
        type=nonnegative_float,
        default=d.val_size,
        help="training clips held out for validation (and, with --keep best, to choose the epoch): 0 for none, "
        f"a count, or a fraction below 1 (default: {d.val_size})",
    )
    t.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=d.schedule,
        help=f"learning rate: constant, or cosine-decayed to 0 over the epochs (default: {d.schedule})",
    )
    t.add_argument(
        "--keep",
        choices=KEEPS,
        default=d.keep,
        help=f"the weights kept: the epoch best on the held-out clips, or the last (default: {d.keep})",
    )
    t.add_argument(
        "--label-smoothing",
        type=_rate,
        default=d.label_smoothing,
        help=f"label smoothing of the cross-entropy (default: {d.label_smoothing})",
    )
    t.add_argument(
        "--centre",
        choices=CENTRES,
        default=d.centre,
        help=f"centre every frame on its hip centre, or on the first frame's (default: {d.centre})",
    )
    for name, what in (
        ("input_norm", "batch-normalise the BLSTM's input features"),
        ("motion", "add each joint's frame-to-frame displacement to the input"),
        ("bones", "add each joint's vector from its parent joint to the input"),
        ("motion2", "add each joint's displacement over two frames to the input"),
    ):
        on = getattr(d, name)
        t.add_argument(
            f"--{name.replace('_', '-')}",
            action=argparse.BooleanOptionalAction,
            default=on,
            help=f"{what} (default: {'on' if on else 'off'})",
        )
    t.add_argument("--no-augment", action="store_true", help="switch data augmentation off (default: on)")
    t.add_argument("--no-frame-dropout", action="store_true", help="switch dynamic frame dropout off (default: on)")
    t.add_argument("--no-gradient-injection", action="store_true", help="switch the auxiliary losses off (default: on)")
    t.add_argument(
        "--frame-dropout-rate",
        type=_rate,
        default=d.frame_dropout_rate,
        help=f"share of frames dropped per clip and step (default: {d.frame_dropout_rate})",
    )
    t.add_argument(
        "--injection-weight",
        type=positive_float,
        default=d.injection_weight,
        help=f"weight of the auxiliary losses (default: {d.injection_weight})",
    )
    t.add_argument(
        "--out", type=output_file, default="activity.safetensors", help="model file (default: activity.safetensors)"
    )
    t.set_defaults(func=_train)

    v = cmds.add_parser(
        "evaluate",
        help="accuracy of a model on a data set's test subjects or a folder of labelled clips",
        description="Accuracy, per-action accuracy and the confusion matrix of a trained model.",
    )
    v.add_argument("model", metavar="MODEL", help="model file from `gatelab activity train`")
    v.add_argument("data", metavar="DATA", help=_data_help())
    v.add_argument(
        "--subset", choices=tuple(MSR_SUBSETS), default=None, help="MSR Action3D subset (default: the model's)"
    )
    v.add_argument("--out", type=output_file, default=None, help="also write the scores as JSON here (default: none)")
    add_common(v, seed=False)
    v.set_defaults(func=_evaluate)

    p = cmds.add_parser(
        "predict",
        help="the top-3 actions of a video or skeleton file, with an overlay picture for videos",
        description="Extract the skeleton (videos), classify it and print the top-3 actions with probabilities.",
    )
    p.add_argument("model", metavar="MODEL", help="model file from `gatelab activity train`")
    p.add_argument("input", metavar="VIDEO_OR_SKELETON", help="a video, or a .npz/.txt/.mat skeleton file")
    p.add_argument(
        "--overlay", type=output_file, default=None, help="overlay picture for a video (default: VIDEO.prediction.png)"
    )
    add_common(p, seed=False)
    p.set_defaults(func=_predict)


def _extract(args) -> int:
    from pathlib import Path

    from gatelab.activity.video import draw_overlay, extract_folder, extract_skeletons

    src = Path(args.video)
    opts = {"cache": not args.no_cache, "min_visibility": args.min_visibility, "progress": not args.quiet}
    pairs = extract_folder(src, **opts) if src.is_dir() else [(src, extract_skeletons(src, **opts))]
    for video, seq in pairs:
        sheet = draw_overlay(video, seq, video.with_name(video.name + ".skeleton.png"), frames=args.frames)
        seen = float(seq.valid.mean())
        print(f"{video}: {len(seq)} frames, {seen:.0%} of landmarks seen; contact sheet {sheet}")
    return 0


def _dataset(name: str, part: str, subset: str, config, classes=None):
    """A named data set's cross-subject part, or a labelled folder (``part`` ignored)."""
    from gatelab.activity.protocols import DATASETS, LAYOUT, load_split
    from gatelab.activity.readers import load_folder
    from gatelab.activity.trainer import SkeletonDataset
    from gatelab.errors import GatelabError

    if name in DATASETS:
        return load_split(name, part, subset, config)
    clips, found = load_folder(name)
    if classes is not None:
        if not set(found) <= set(classes):
            raise GatelabError(f"{name} has actions the model does not know: {sorted(set(found) - set(classes))}")
        for clip in clips:
            clip.label = classes.index(found[clip.label])
        found = classes
    layout = clips[0].sequence.layout
    layout = LAYOUT["utd-mhad"] if layout == "mediapipe33" else layout
    return SkeletonDataset.from_clips(clips, found, layout, config)


def _train(args) -> int:
    from gatelab.activity.protocols import DATASETS
    from gatelab.activity.trainer import ActivityConfig, evaluate, save_model, train
    from gatelab.progress import say

    config = ActivityConfig(
        arch=args.arch,
        hidden=args.hidden,
        layers=args.layers,
        ensemble=args.ensemble,
        frames=args.frames,
        centre=args.centre,
        motion=args.motion,
        bones=args.bones,
        motion2=args.motion2,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        val_size=args.val_size,
        schedule=args.schedule,
        keep=args.keep,
        label_smoothing=args.label_smoothing,
        input_norm=args.input_norm,
        augment=not args.no_augment,
        frame_dropout=not args.no_frame_dropout,
        frame_dropout_rate=args.frame_dropout_rate,
        gradient_injection=not args.no_gradient_injection,
        injection_weight=args.injection_weight,
    ).validate()
    data = _dataset(args.data, "train", args.subset, config)
    data = data.fraction(args.label_fraction, args.seed)
    model, history = train(
        data,
        config,
        seed=args.seed,
        device=args.device,
        checkpoint=checkpoint_beside(args.out),
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        quiet=args.quiet,
        log_dir=args.log_dir,
    )
    info = {"data": args.data, "subset": args.subset, "label_fraction": args.label_fraction, "train_clips": len(data)}
    if args.data in DATASETS:  # the test subjects, read once, now
        scores = evaluate(model, _dataset(args.data, "test", args.subset, config))
        info["test_accuracy"] = scores["accuracy"]
        say(f"test accuracy ({args.data} {args.subset}, cross-subject): {scores['accuracy']:.4f}", args.quiet)
    save_model(model, args.out, config, data.layout, data.classes, history=history[-1:], **info)
    checkpoint_beside(args.out).unlink(missing_ok=True)
    print(f"model: {args.out}" + (f" (test accuracy {info['test_accuracy']:.4f})" if "test_accuracy" in info else ""))
    return 0


def _evaluate(args) -> int:
    from gatelab.activity.trainer import evaluate, load_model
    from gatelab.errors import GatelabError
    from gatelab.files import write_json

    model, config, meta = load_model(args.model)
    model.to(args.device)
    subset = args.subset or meta.get("subset", "all")
    data = _dataset(args.data, "test", subset, config, classes=meta["classes"])
    if data.classes != meta["classes"]:
        raise GatelabError(
            f"{args.model} knows {len(meta['classes'])} actions ({meta.get('subset', 'a folder')}), not the "
            f"{len(data.classes)} of {args.data} {subset}; evaluate it on the subset it was trained on"
        )
    scores = evaluate(model, data)
    print(f"accuracy {scores['accuracy']:.4f} on {scores['n']} clips")
    if args.out:
        write_json(args.out, {"model": args.model, "data": args.data, "subset": subset, **scores})
    return 0


def _predict(args) -> int:
    from pathlib import Path

    from gatelab.activity.readers import VIDEO_SUFFIXES, read_clip
    from gatelab.activity.trainer import load_model, predict

    model, config, meta = load_model(args.model)
    model.to(args.device)
    path = Path(args.input)
    sequence = read_clip(path, progress=not args.quiet) if path.suffix.lower() in VIDEO_SUFFIXES else read_clip(path)
    top = predict(model, config, meta, sequence, top=3)
    for action, prob in top:
        print(f"{prob:6.1%}  {action}")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        from gatelab.activity.video import draw_overlay

        out = Path(args.overlay) if args.overlay else path.with_name(path.name + ".prediction.png")
        title = ", ".join(f"{a} {p:.0%}" for a, p in top)
        print(f"overlay: {draw_overlay(path, sequence, out, title=title)}")
    return 0
