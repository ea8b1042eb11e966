"""Sarker et al.'s experiments on skeletons: MSR Action3D and UTD-MHAD cross-subject, limited labels, ablation.

Every model is one report stage (``gatelab reproduce NAME --resume RUN_DIR`` skips finished ones and continues the
one in progress from its checkpoint) and is saved in ``models/``. Training sees only the training subjects (the
last epoch kept, or with ``keep`` "best" the epoch chosen on a seeded validation split of them); the test subjects
of each action subset are read once, in the last stage, where every saved model is scored. The BLSTM and the
ST-GCN peer share the trainer, the inputs and the splits.

The paper (arXiv:1812.06544) is available to us only as its abstract, which states no number, so the ``paper``
column is empty. Published MSR Action3D skeleton results (e.g. Du et al.'s hierarchical RNN, CVPR 2015) belong in
the ``reference`` column only as their papers state them; we could not read those tables here, so those cells
stay empty rather than be filled from memory.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from gatelab.activity.protocols import load_split
from gatelab.activity.trainer import ActivityConfig, evaluate, load_model, save_model, train
from gatelab.errors import GatelabError
from gatelab.reproduce import Report, register

PAPER = (
    "Sarker, Masoud, Belkasim & Ji, Towards Robust Human Activity Recognition from RGB Video Stream with "
    "Limited Labeled Data, ICMLA 2018 (arXiv:1812.06544)"
)
TARGET = 0.90  # the accuracy target on both data sets
AIDS = ("augment", "frame_dropout", "gradient_injection")

# subsets: the MSR Action3D subsets trained on; curve: where the limited-label curve and the ablation run;
# fractions: label fractions of the curve; ablation: the label fractions of the ablation (all aids but one);
# model: ActivityConfig overrides (BLSTM; the peer takes them too); stgcn_channels: the peer's widths. The full
# run uses the library defaults; the quick one trains single models (no ensemble), fewer epochs and frames.
QUICK = {
    "subsets": ["AS1"],
    "curve": ["AS1"],
    "fractions": [0.1, 0.25, 1.0],
    "ablation": [0.1],
    "model": {"epochs": 40, "frames": 24, "ensemble": 1},
    "stgcn_channels": [32, 32, 64, 64, 128],
}
FULL = {
    "subsets": ["AS1", "AS2", "AS3", "all"],
    "curve": ["AS1", "AS2", "AS3"],
    "fractions": [0.1, 0.25, 0.5, 1.0],
    "ablation": [0.1, 1.0],
    "model": {},
    "stgcn_channels": list(ActivityConfig().channels),
}
UTD_QUICK = {**QUICK, "subsets": ["all"], "curve": ["all"], "model": {**QUICK["model"], "epochs": 15}}
UTD_FULL = {**FULL, "subsets": ["all"], "curve": ["all"]}


def _models(report: Report) -> Path:
    folder = report.folder / "models"
    folder.mkdir(exist_ok=True)
    return folder


def _fit(report: Report, dataset: str, key: str, subset: str, config: ActivityConfig, fraction: float) -> dict:
    """Stage ``key``: train on ``fraction`` of ``subset``'s training subjects and save the model."""

    def run() -> dict:
        data = load_split(dataset, "train", subset, config).fraction(fraction, report.seed)
        model, history = train(
            data, config, seed=report.seed, device=report.device, desc=key, **report.trainer_options(key)
        )
        save_model(model.cpu(), _models(report) / f"{key}.safetensors", config, data.layout, data.classes)
        kept = history[-1]
        if config.keep == "best":
            kept = min(history, key=lambda h: (h["validation_error"], h["validation_loss"]))
        return {"train_clips": len(data), "kept_epoch": kept["epoch"], "validation_error": kept.get("validation_error")}

    return report.stage(key, run)


def _plan(s: dict, seed: int) -> dict[str, tuple[str, ActivityConfig, float]]:
    """Every model of the experiment: key -> (subset, config, label fraction)."""
    base = ActivityConfig(**s["model"])
    plan = {}
    for subset in s["subsets"]:
        plan[f"{subset}-blstm"] = (subset, base, 1.0)
        plan[f"{subset}-stgcn"] = (subset, replace(base, arch="stgcn", channels=s["stgcn_channels"]), 1.0)
    for subset in s["curve"]:
        for f in s["fractions"]:
            if f != 1.0 or subset not in s["subsets"]:
                plan[f"{subset}-blstm-{f:g}"] = (subset, base, f)
            plan[f"{subset}-noaids-{f:g}"] = (subset, base.without_aids(), f)
        for aid in AIDS:  # ablation: all aids but one
            for f in s["ablation"]:
                plan[f"{subset}-no_{aid}-{f:g}"] = (subset, replace(base, **{aid: False}), f)
    return plan


def _experiment(report: Report, dataset: str, s: dict) -> dict:
    plan = _plan(s, report.seed)
    report.settings.update(
        {
            "data set": dataset,
            "split": "cross-subject",
            "BLSTM config": asdict(ActivityConfig(**s["model"])),
            "ST-GCN channels": s["stgcn_channels"],
            "label fractions": s["fractions"],
            "models trained": len(plan),
        }
    )
    fits = {key: _fit(report, dataset, key, subset, cfg, f) for key, (subset, cfg, f) in plan.items()}

    def score() -> dict:  # the test subjects: read once per subset, here, after every model is trained
        scores = {}
        for subset in sorted({subset for subset, _, _ in plan.values()}):
            test = load_split(dataset, "test", subset, ActivityConfig(**s["model"]))
            for key, (sub, _, _) in plan.items():
                if sub == subset:
                    model, _, _ = load_model(_models(report) / f"{key}.safetensors")
                    scores[key] = evaluate(model, test)
        return scores

    scores = report.stage("test", score)
    report.results.update({"fits": fits, "scores": scores})
    return {"plan": plan, "fits": fits, "scores": scores}


def _acc(scores: dict, key: str) -> float:
    return round(100 * scores[key]["accuracy"], 2)


def _tables(report: Report, s: dict, out: dict, classes_of) -> None:
    plan, scores = out["plan"], out["scores"]
    for subset in s["subsets"]:
        ours, peer = _acc(scores, f"{subset}-blstm"), _acc(scores, f"{subset}-stgcn")
        report.row(f"{subset}: BLSTM + aids, accuracy (%)", None, ours, "cross-subject test subjects")
        report.row(f"{subset}: ST-GCN peer, accuracy (%)", None, peer, "same trainer, inputs and split")
    main = [s for s in s["subsets"] if s != "all"]
    if len(main) > 1:
        avg = round(float(np.mean([_acc(scores, f"{m}-blstm") for m in main])), 2)
        peer = round(float(np.mean([_acc(scores, f"{m}-stgcn") for m in main])), 2)
        report.row(f"average {'/'.join(main)}: BLSTM + aids (%)", None, avg, f"target >= {100 * TARGET:.0f}")
        report.row(f"average {'/'.join(main)}: ST-GCN (%)", None, peer)
    curve = {}
    for f in s["fractions"]:
        with_aids = [
            _acc(scores, f"{c}-blstm" if f == 1.0 and c in s["subsets"] else f"{c}-blstm-{f:g}") for c in s["curve"]
        ]
        without = [_acc(scores, f"{c}-noaids-{f:g}") for c in s["curve"]]
        curve[f] = (float(np.mean(with_aids)), float(np.mean(without)))
        report.row(f"{f:.0%} labels: with aids / without (%)", None, f"{curve[f][0]:.2f} / {curve[f][1]:.2f}",
                   f"mean over {', '.join(s['curve'])}")  # fmt: skip
    for aid in AIDS:
        for f in s["ablation"]:
            full = [
                _acc(scores, f"{c}-blstm" if f == 1.0 and c in s["subsets"] else f"{c}-blstm-{f:g}") for c in s["curve"]
            ]
            cut = [_acc(scores, f"{c}-no_{aid}-{f:g}") for c in s["curve"]]
            report.row(f"ablation, {f:.0%} labels: all aids / without {aid} (%)", None,
                       f"{np.mean(full):.2f} / {np.mean(cut):.2f}")  # fmt: skip
    report.results["curve"] = {f"{f:g}": v for f, v in curve.items()}
    report.save_figure(_curve_figure(curve), "limited_labels.png")
    key = f"{s['subsets'][-1]}-blstm"
    report.save_figure(_confusion_figure(scores[key]["confusion"], classes_of(plan[key][0]), key), "confusion.png")


def _curve_figure(curve: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    fr = sorted(curve)
    ax.plot([100 * f for f in fr], [curve[f][0] for f in fr], "o-", label="with the three aids")
    ax.plot([100 * f for f in fr], [curve[f][1] for f in fr], "s--", label="without")
    ax.set_xlabel("training labels used (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _confusion_figure(confusion, classes, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(confusion, dtype=float)
    m = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.4 * len(classes) + 3, 0.4 * len(classes) + 2.5))
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: confusion (row-normalised)")
    return fig


def _targets(report: Report, s: dict, out: dict) -> None:
    scores, main = out["scores"], [x for x in s["subsets"] if x != "all"] or s["subsets"]
    avg = np.mean([scores[f"{m}-blstm"]["accuracy"] for m in main])
    peer = np.mean([scores[f"{m}-stgcn"]["accuracy"] for m in main])
    curve = report.results["curve"]
    low = [f for f in s["fractions"] if f <= 0.25]
    helped = [f"{f:.0%}" for f in low if curve[f"{f:g}"][0] > curve[f"{f:g}"][1]]
    report.note(
        f"Targets: accuracy {100 * avg:.1f}% (target >= {100 * TARGET:.0f}%: {'met' if avg >= TARGET else 'missed'}); "
        f"the aids help at {', '.join(helped) or 'none'} of {', '.join(f'{f:.0%}' for f in low)} labels; "
        f"BLSTM {'>=' if avg >= peer else '<'} ST-GCN ({100 * avg:.1f}% vs {100 * peer:.1f}%)."
        + (
            " Quick settings: few epochs, single models instead of the ensemble of "
            f"{ActivityConfig().ensemble}, far from converged; run without --quick."
            if report.quick
            else ""
        )
    )


@register("activity-msr3d", "Deep BLSTM with three aids on MSR Action3D: subsets, limited labels, ST-GCN", PAPER)
def activity_msr3d(report: Report, quick: bool, seed: int) -> None:
    from gatelab.activity.protocols import actions

    s = QUICK if quick else FULL
    out = _experiment(report, "msr-action3d", s)
    _tables(report, s, out, lambda subset: actions("msr-action3d", subset)[1])
    _targets(report, s, out)
    report.note(
        "MSR Action3D: the 557 sequences of the data set's files_used_in_cvpr12_paper.txt (10 of the 567 have broken "
        "skeletons); subjects 1, 3, 5, 7, 9 train and 2, 4, 6, 8, 10 test; subsets AS1-AS3 of Li et al. (2010). "
        "The paper reports no MSR Action3D number that we could read; published skeleton results (Du et al., "
        "CVPR 2015, and others) are left empty: their tables could not be read here, and no cell is filled from "
        "memory."
    )


@register("activity-utd-mhad", "Deep BLSTM with three aids on UTD-MHAD skeletons; the RGB path on a real clip", PAPER)
def activity_utd_mhad(report: Report, quick: bool, seed: int) -> None:
    from gatelab.activity.protocols import actions

    s = UTD_QUICK if quick else UTD_FULL
    out = _experiment(report, "utd-mhad", s)
    _tables(report, s, out, lambda subset: actions("utd-mhad", subset)[1])
    _targets(report, s, out)
    report.note(
        "UTD-MHAD has no RGB videos here, so the paper's RGB -> skeleton step cannot be run on it: these models train "
        "on its Kinect v1 skeletons (subjects 1, 3, 5, 7 train; 2, 4, 6, 8 test). The RGB path runs on the one real "
        "clip in the shared data (tfjs_pose_squats.mp4), below, when the video extra is installed."
    )
    _rgb_clip(report)


def _rgb_clip(report: Report) -> None:
    """Extract the squat clip's skeleton and classify it with the UTD-MHAD model (action 27 is "squat")."""
    from gatelab.activity.trainer import predict
    from gatelab.data.store import data_dir

    clip = data_dir() / "video" / "tfjs_pose_squats.mp4"
    try:
        from gatelab.activity.video import extract_skeletons

        sequence = extract_skeletons(clip, cache=False, progress=not report.quiet)
    except (ImportError, GatelabError) as exc:  # no video module or no mediapipe here
        report.note(f"RGB path not run on {clip.name}: {exc}. It needs pip install 'gatelab[video]'.")
        return
    model, config, meta = load_model(_models(report) / "all-blstm.safetensors")
    top = predict(model, config, meta, sequence)
    report.results["rgb_clip"] = {"clip": clip.name, "top3": top}
    report.row("RGB clip (squats): top-1 action", None, top[0][0], ", ".join(f"{a} {p:.0%}" for a, p in top))
