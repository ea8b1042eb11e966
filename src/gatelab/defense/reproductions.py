"""Defense-VAE's headline experiment on MNIST and Fashion-MNIST: accuracy under attack with and without purification.

Stages, per classifier defended (models A-D in the full run, D in the quick one; each a report stage, so ``gatelab
reproduce defense-vae-mnist --resume RUN_DIR`` skips finished ones): the classifier (its epoch chosen on a seeded
validation split), the (adversarial, clean) training pairs (written shard by shard, so an interrupted generation
continues), the Defense-VAE (mode 1), the classifier retrained on reconstructions (mode 2), the end-to-end fine-tuning
(mode 3) and the PGD adversarially trained peer. The test split is read once, after every model's stages: per model,
its last 150 images train the black-box attacker's substitute (model E), the first ones are evaluated: every defence
under the paper's white-box attacks at ε = 0.3 (crafted on its own classifier, oblivious to the purifier), FGSM
transferred from the substitute, the adaptive PGD through the whole defended model, the Defense-GAN-style projection
baseline, and the purification time of both purifiers.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch

from gatelab.data import image_splits, mnist_tensors
from gatelab.defense.adversarial import AdversarialConfig, adversarial_training
from gatelab.defense.attacks import attack
from gatelab.defense.classifiers import ClassifierConfig, load_classifier, save_classifier, train_classifier
from gatelab.defense.end_to_end import EndToEndConfig, fine_tune
from gatelab.defense.evaluate import ADAPTIVE, BLACK_BOX, WHITE_BOX, accuracy_table_png, evaluate
from gatelab.defense.pairs import PAPER_ATTACKS, PAPER_EPS, load_pair_labels, load_pairs, make_pairs, subset_rows
from gatelab.defense.projection import BPDA, ProjectionPurifier
from gatelab.defense.purifier import DefenseVAE
from gatelab.defense.substitute import HOLD_OUT, SubstituteConfig, train_substitute
from gatelab.defense.vae import VAEConfig
from gatelab.reproduce import Report, register

PAPER = "Li & Ji, Defense-VAE: A Fast and Accurate Defense against Adversarial Attacks, arXiv:1812.06570"
EPS = 0.3
ATTACKS = WHITE_BOX  # fgsm, rand_fgsm, cw_softmax (the paper's) and cw (on logits), oblivious to the purifier
TARGET_ACCURACY, TARGET_SPEEDUP = 0.9, 50.0  # the targets (mode 1, MNIST model A; Defense-VAE vs projection)
NAMES = {
    "undefended": "no defence",
    "defense_vae": "Defense-VAE mode 1",
    "mode_2": "Defense-VAE mode 2",
    "mode_3": "Defense-VAE mode 3",
    "adversarial": "PGD adversarial training",
    "projection": "projection baseline",
}

# models: the classifiers defended, each with its own pairs, purifiers and peer (quick: the MLP D, as CW and PGD
# through model A cost seconds per image on a CPU);
# classifier_examples / classifier_epochs: its training (None: all images left after the validation split);
# pair_images: training images attacked by FGSM and RAND+FGSM at every eps (None: all 60,000), cw_images: by CW;
# vae_epochs / vae_batch: the Defense-VAE (the paper: 5 epochs of batch 16); end_to_end_pairs / _epochs: mode 3's
# fine-tuning on a seeded subset of the pairs (None: all); adversarial_examples / _epochs / _steps / _alpha /
# _from_clean: the PGD training of each model (Madry: 40 steps of 0.01, from scratch); test_images: test images
# evaluated (None: all but the substitute's 150); adaptive_images: the first N of those also attacked by the
# adaptive PGD; projection_images: the first N also purified by the (slow) projection baseline; bpda_images: the
# first N attacked through it by BPDA (40 projections per image: minutes each on a CPU)
QUICK = {
    "models": ("D",),
    "classifier_examples": 3000,
    "classifier_epochs": 5,
    "val_size": 1000,
    "pair_images": 400,
    "cw_images": 400,
    "vae_latent": 128,
    "vae_epochs": 1,
    "vae_batch": 16,
    "end_to_end_pairs": 1600,
    "end_to_end_epochs": 1,
    "adversarial_examples": 3000,
    "adversarial_epochs": 3,
    "adversarial_steps": 7,
    "adversarial_alpha": 0.1,
    "adversarial_from_clean": True,
    "test_images": 200,
    "adaptive_images": 20,
    "projection_images": 1,
    "bpda_images": 0,
}
FULL = {
    "models": ("A", "B", "C", "D"),
    "classifier_examples": None,
    "classifier_epochs": ClassifierConfig.epochs,
    "val_size": ClassifierConfig.val_size,
    "pair_images": None,
    "cw_images": None,
    "vae_latent": VAEConfig.latent,
    "vae_epochs": VAEConfig.epochs,
    "vae_batch": VAEConfig.batch_size,
    "end_to_end_pairs": None,
    "end_to_end_epochs": EndToEndConfig.epochs,
    "adversarial_examples": None,
    "adversarial_epochs": ClassifierConfig.epochs,
    "adversarial_steps": AdversarialConfig.steps,
    "adversarial_alpha": AdversarialConfig.alpha,
    "adversarial_from_clean": False,
    "test_images": None,
    "adaptive_images": 1000,
    "projection_images": 1000,
    "bpda_images": 20,
}


def _pairs(report: Report, classifier, dataset: str, s: dict, seed: int, tag: str):
    """Stage "pairs" (+ ``tag``): every paper attack at every ε on the training images outside the validation split
    (which chooses the classifiers' epochs, mode 2's among them), in one folder per image count."""
    x, y, _, _ = image_splits(dataset, s["val_size"], seed)
    groups = {}  # images attacked -> attacks
    for name in PAPER_ATTACKS:
        n = s["cw_images"] if name == "cw_softmax" else s["pair_images"]
        groups.setdefault(len(x) if n is None else n, []).append(name)
    folders = [(report.folder / f"pairs{tag}" / f"{n}-images", n, tuple(names)) for n, names in groups.items()]

    def make() -> dict:
        for folder, n, names in folders:
            make_pairs(classifier, x[:n], y[:n], folder, names, PAPER_EPS, seed=seed, quiet=report.quiet)
        return {"groups": [{"folder": str(f.name), "images": n, "attacks": list(a)} for f, n, a in folders]}

    result = report.stage(f"pairs{tag}", make)
    loaded = [(*load_pairs(folder), load_pair_labels(folder)) for folder, _, _ in folders]
    if len(loaded) == 1:
        return loaded[0], result
    return tuple(np.concatenate(parts) for parts in zip(*loaded)), result


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _projection_accuracy(classifier, projection: ProjectionPurifier, x, y, shared: dict, seed: int):
    """Accuracy of the classifier on projected clean and adversarial images (the white-box attacks crafted as in
    ``evaluate``: on the classifier alone, one batch, seed ``seed``; ``shared``: other rows' images, as the black-box
    ones), and the seconds spent projecting per image."""
    table, seconds = {}, 0.0
    sources = {"clean": x, **{row: attack(classifier, x, y, row, EPS, seed=seed) for row in ATTACKS}, **shared}
    for row, adv in sources.items():
        purified, spent = _timed(lambda adv=adv: projection.purify(adv))
        seconds += spent
        with torch.no_grad():
            table[row] = float((classifier(purified).argmax(1) == y).float().mean())
    return table, seconds / (len(sources) * len(x))


def _run(report: Report, dataset: str, quick: bool, seed: int) -> None:
    """Every model of the setting trained (all stages), then the test split read once and every model evaluated."""
    s = {**(QUICK if quick else FULL), **report.overrides}
    report.settings.update(s, dataset=dataset, eps=EPS, attacks=", ".join(ATTACKS), pair_eps=str(PAPER_EPS))
    report.settings["models"] = ", ".join(s["models"])
    report.settings["validation images"] = (
        f"{s['val_size']}, a seeded split of the training images, held out of every training; "
        "it chooses the classifiers' epochs"
    )
    if s["cw_images"] != s["pair_images"]:
        report.note(
            f"CW pairs (100 iterations each, slow on a CPU) come from the first {s['cw_images']} training images, "
            f"FGSM and RAND+FGSM pairs from {s['pair_images'] or 'all'}; the paper attacks all 60,000 with each."
        )
    tags = {m: "" if len(s["models"]) == 1 else f"-{m}" for m in s["models"]}
    trained = {m: _train(report, dataset, s, seed, m, tags[m]) for m in s["models"]}

    # The final numbers: the test split is read here, once
    xt, yt = mnist_tensors(dataset, "test")
    for m in s["models"]:
        _evaluate(report, dataset, s, seed, m, tags[m], trained[m], xt, yt)


def _train(report: Report, dataset: str, s: dict, seed: int, model: str, tag: str) -> dict:
    """Stages of one classifier ``model`` (keys and files suffixed by ``tag``): the classifier, its pairs, the
    Defense-VAE, modes 2 and 3, the PGD-trained peer. Returns the trained models, loaded from their files."""
    device = report.device
    cconfig = ClassifierConfig(
        model=model,
        dataset=dataset,
        epochs=s["classifier_epochs"],
        train_examples=s["classifier_examples"],
        val_size=s["val_size"],
        seed=seed,
        device=device,
    )
    report.settings[f"classifier{tag}"] = asdict(cconfig)
    paths = {
        name: report.folder / f"{name}{tag}.safetensors"
        for name in ("classifier", "defense-vae", "mode-2-classifier", "mode-3-classifier", "mode-3-vae", "pgd")
    }

    def train_clf() -> dict:
        net, history = train_classifier(cconfig, **report.trainer_options(f"classifier{tag}"))
        save_classifier(net, cconfig, paths["classifier"])
        return {"history": history}

    results = {"classifier": report.stage(f"classifier{tag}", train_clf)["history"]}
    classifier, _ = load_classifier(paths["classifier"], device)

    (adversarial, clean, labels), results["pairs"] = _pairs(report, classifier, dataset, s, seed, tag)
    report.settings[f"training pairs{tag}"] = len(adversarial)

    vconfig = VAEConfig(latent=s["vae_latent"], epochs=s["vae_epochs"], batch_size=s["vae_batch"])
    report.settings["Defense-VAE"] = asdict(vconfig)

    def fit_vae() -> dict:
        purifier = DefenseVAE(vconfig, seed=seed, device=device)
        purifier.fit(adversarial, clean, **report.trainer_options(f"vae{tag}"))
        purifier.save(paths["defense-vae"])
        return {"history": purifier.history_}

    results["vae"] = report.stage(f"vae{tag}", fit_vae)["history"]
    purifier = DefenseVAE.load(paths["defense-vae"], device)

    def mode_2() -> dict:
        net, history = train_classifier(cconfig, purifier=purifier, **report.trainer_options(f"mode_2{tag}"))
        save_classifier(net, cconfig, paths["mode-2-classifier"])
        return {"history": history}

    results["mode_2"] = report.stage(f"mode_2{tag}", mode_2)["history"]
    econfig = EndToEndConfig(epochs=s["end_to_end_epochs"])
    report.settings["end-to-end (mode 3)"] = {**asdict(econfig), "pairs": s["end_to_end_pairs"] or "all"}

    def mode_3() -> dict:
        triples = subset_rows((adversarial, clean, labels), s["end_to_end_pairs"], seed)
        net, tuned, history = fine_tune(
            classifier, purifier, *triples, econfig, seed=seed, device=device, **report.trainer_options(f"mode_3{tag}")
        )
        save_classifier(net, cconfig, paths["mode-3-classifier"])
        tuned.save(paths["mode-3-vae"])
        return {"history": history}

    results["mode_3"] = report.stage(f"mode_3{tag}", mode_3)["history"]
    aconfig = AdversarialConfig(
        **{**asdict(cconfig), "epochs": s["adversarial_epochs"], "train_examples": s["adversarial_examples"]},
        steps=s["adversarial_steps"],
        alpha=s["adversarial_alpha"],
    )
    report.settings[f"PGD adversarial training{tag}"] = {
        **asdict(aconfig),
        "from the clean classifier": s["adversarial_from_clean"],
    }

    def pgd_training() -> dict:
        init = classifier if s["adversarial_from_clean"] else None
        net, history = adversarial_training(aconfig, init=init, **report.trainer_options(f"pgd{tag}"))
        save_classifier(net, cconfig, paths["pgd"])
        return {"history": history}

    results["adversarial"] = report.stage(f"adversarial{tag}", pgd_training)["history"]
    defences = {
        "mode_2": (load_classifier(paths["mode-2-classifier"], device)[0], purifier),
        "mode_3": (
            load_classifier(paths["mode-3-classifier"], device)[0],
            DefenseVAE.load(paths["mode-3-vae"], device),
        ),
        "adversarial": (load_classifier(paths["pgd"], device)[0], None),
    }
    return {"classifier": classifier, "purifier": purifier, "defences": defences, "training": results}


def _evaluate(report: Report, dataset: str, s: dict, seed: int, model: str, tag: str, trained: dict, xt, yt) -> None:
    """One model's table on the test images (its results under ``report.results``, or under
    ``report.results["models"][model]`` when the run has several models)."""
    device = report.device
    classifier, purifier, defences = trained["classifier"], trained["purifier"], trained["defences"]
    out = report.results if not tag else report.results.setdefault("models", {}).setdefault(model, {})
    results = out["training"] = trained["training"]
    xs = xt[-HOLD_OUT:].to(device)  # the black-box attacker's images, never evaluated on
    n = len(xt) - HOLD_OUT if s["test_images"] is None else s["test_images"]
    xt, yt = xt[:n].to(device), yt[:n].to(device)
    sconfig = SubstituteConfig(seed=seed)
    substitute, results["substitute"] = train_substitute(classifier, xs, sconfig, quiet=report.quiet)
    report.settings["substitute"] = {**asdict(sconfig), "images": HOLD_OUT, "oracle": "the undefended classifier"}
    k_adaptive = min(s["adaptive_images"], n)
    table = evaluate(
        classifier,
        xt,
        yt,
        ATTACKS,
        EPS,
        purifier=purifier,
        adaptive=True,
        seed=seed,
        quiet=report.quiet,
        defences=defences,
        substitute=substitute,
        adaptive_images=k_adaptive,
    )
    _, vae_seconds = _timed(lambda: purifier.purify(xt))
    k = min(s["projection_images"], n)
    projection = ProjectionPurifier(purifier, seed=seed)
    with torch.no_grad():
        guess = substitute(xt[:k]).argmax(1)
    shared = {BLACK_BOX: attack(substitute, xt[:k], guess, "fgsm", EPS, seed=seed)}
    proj_table, proj_seconds = _projection_accuracy(classifier, projection, xt[:k], yt[:k], shared, seed)
    for row, acc in proj_table.items():
        table[row]["projection"] = acc
    k_bpda = min(s["bpda_images"], n)
    if k_bpda:
        xb, yb = xt[:k_bpda], yt[:k_bpda]
        adv = attack(BPDA(classifier, projection), xb, yb, "pgd", EPS, seed=seed)
        with torch.no_grad():
            table[ADAPTIVE]["projection"] = float((classifier(projection.purify(adv)).argmax(1) == yb).float().mean())
    per_1000 = {"defense_vae": 1000 * vae_seconds / n, "projection": 1000 * proj_seconds}
    out.update(
        accuracy=table,
        seconds_per_1000=per_1000,
        test_images=n,
        adaptive_images=k_adaptive,
        projection_images=k,
        bpda_images=k_bpda,
    )
    prefix = f"model {model}, " if tag else ""
    _rows(report, table, per_1000, n, k_adaptive, k, k_bpda, prefix)
    _targets(report, dataset, table, per_1000, model, prefix)
    if model == s["models"][0]:
        _notes(report, s, n, k_adaptive, k, k_bpda)
    accuracy_table_png(table, report.folder / f"accuracy{tag}.png")
    report.plots.append(f"accuracy{tag}.png")


def _rows(
    report: Report, table: dict, per_1000: dict, n: int, k_adaptive: int, k: int, k_bpda: int, prefix: str
) -> None:
    """One model's rows (``prefix``: "model X, " when the run has several models)."""
    for col, name in NAMES.items():
        for row in ("clean", *ATTACKS, BLACK_BOX, ADAPTIVE):
            if col not in table[row]:
                continue
            if col == "projection":
                images = k_bpda if row == ADAPTIVE else k
            else:
                images = k_adaptive if row == ADAPTIVE else n
            what = "clean" if row == "clean" else f"{row.replace('_', ' ')} eps {EPS:g}"
            kind = {"clean": "", ADAPTIVE: ", through the whole defence", BLACK_BOX: ", from the substitute"}
            report.row(
                f"{prefix}{name}: {what} (%)",
                None,
                round(100 * table[row][col], 2),
                f"{images} test images" + kind.get(row, ", white-box"),
            )
    report.row(
        f"{prefix}Defense-VAE: purification seconds per 1,000 images",
        None,
        round(per_1000["defense_vae"], 4),
        f"timed on {n} clean test images; the same for modes 1-3",
    )
    report.row(
        f"{prefix}projection baseline: purification seconds per 1,000 images",
        None,
        round(per_1000["projection"], 2),
        f"extrapolated from {k} test images (mean over clean and the attacks); L=200, R=10",
    )


def _notes(report: Report, s: dict, n: int, k_adaptive: int, k: int, k_bpda: int) -> None:
    """The notes that hold for every model of the run."""
    report.note(
        f"White-box attacks are crafted on each defence's own classifier (model {', '.join(s['models'])}; "
        "modes 2 and 3: their retrained ones; the PGD-trained one), oblivious to its purifier, as in the paper. "
        "The black-box row is FGSM crafted on "
        f"a Papernot substitute (model E, trained from the last {HOLD_OUT} test images labelled by the "
        "undefended classifier it attacks, 6 Jacobian augmentation rounds, lambda 0.1) and shown to every defence. "
        "The adaptive row is PGD (40 steps of 0.01, random start) through the whole defended model, on the first "
        f"{k_adaptive} test images."
    )
    report.note(
        f"The projection baseline (the VAE's own decoder as generator) is measured on the first {k} of the {n} test "
        "images only: it costs L x R decoder passes per image; its time per 1,000 images is extrapolated from them. "
        + (
            f"Its adaptive row is BPDA (PGD as above, the projection taken as the identity on the way back) on the "
            f"first {k_bpda} images. "
            if k_bpda
            else "No adaptive attack is run through it in this run: BPDA (PGD with the projection as the identity on "
            "the way back, gatelab.defense.BPDA) needs a full projection at each of the 40 steps, 40 x 2,000 decoder "
            "passes per image, minutes per image here; the full run attacks 20 images so."
        )
    )
    if report.quick:
        report.note(
            "Quick run: the PGD-trained peer is the MLP D after a few epochs of PGD-7, too small and too short to "
            "become robust at eps 0.3 (it tends to collapse towards one output); Madry et al. trained a larger CNN "
            "for 100,000 steps, and the full run trains models A-D from scratch with their PGD settings."
        )
    report.note(
        "Paper column empty: the paper's tables could not be retrieved offline, and no number is filled from memory."
    )


def _targets(report: Report, dataset: str, table: dict, per_1000: dict, model: str, prefix: str) -> None:
    """One model's targets, as notes (``prefix``: "model X, " when the run has several models)."""
    if dataset == "mnist":
        accs = {row: table[row]["defense_vae"] for row in PAPER_ATTACKS}
        met = all(a >= TARGET_ACCURACY for a in accs.values())
        report.note(
            f"{prefix}Target (mode 1 at least {100 * TARGET_ACCURACY:.0f}% under each paper attack, MNIST model A) "
            f"{'met' if met else 'NOT met'} with model {model}: "
            + ", ".join(f"{row} {100 * a:.1f}%" for row, a in accs.items())
            + ("; quick settings train far less than the paper." if report.quick else ".")
        )
    better = all(table[row]["defense_vae"] >= table[row]["projection"] for row in PAPER_ATTACKS)  # attacks, not clean
    report.note(
        f"{prefix}Target (Defense-VAE at least as accurate as the projection under every paper attack) "
        f"{'met' if better else 'NOT met'} (projection on its subset only)."
    )
    mode_3 = all(table[row]["mode_3"] >= table[row]["defense_vae"] for row in PAPER_ATTACKS)
    report.note(
        f"{prefix}Target (mode 3 at least as accurate as mode 1 under every paper attack) "
        f"{'met' if mode_3 else 'NOT met'}: "
        + ", ".join(
            f"{row} {100 * table[row]['mode_3']:.1f}% vs {100 * table[row]['defense_vae']:.1f}%"
            for row in PAPER_ATTACKS
        )
        + "."
    )
    ratio = per_1000["projection"] / per_1000["defense_vae"]
    report.note(
        f"{prefix}Target (purification at least {TARGET_SPEEDUP:g}x faster than the projection) "
        f"{'met' if ratio >= TARGET_SPEEDUP else 'NOT met'}: {ratio:.0f}x, measured in this run. "
        "Adaptive PGD through the purifier: "
        + ", ".join(f"{NAMES[c]} {100 * a:.1f}%" for c, a in table[ADAPTIVE].items())
        + "; the same defences under the oblivious FGSM: "
        + ", ".join(f"{100 * table['fgsm'][c]:.1f}%" for c in table[ADAPTIVE])
        + "."
    )


@register(
    "defense-vae-mnist",
    "Defense-VAE on MNIST: models A-D under attack (quick: D); modes 1-3, projection, adversarial training",
    PAPER,
    settings=(QUICK, FULL),
)
def defense_vae_mnist(report: Report, quick: bool, seed: int) -> None:
    _run(report, "mnist", quick, seed)


@register(
    "defense-vae-fmnist",
    "Defense-VAE on Fashion-MNIST: models A-D under attack (quick: D); modes 1-3, projection, adversarial training",
    PAPER,
    settings=(QUICK, FULL),
)
def defense_vae_fmnist(report: Report, quick: bool, seed: int) -> None:
    _run(report, "fashion-mnist", quick, seed)
