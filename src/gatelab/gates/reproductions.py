"""L0-ARM's MNIST experiments: the MLP and LeNet-5-Caffe, with ARM and hard concrete gates.

Each trained model is one stage of the run, with its training checkpoint in the
run folder, so ``gatelab reproduce l0arm-mlp --resume RUN_DIR`` skips the
models that finished and continues the one in progress.
"""

from __future__ import annotations

from dataclasses import asdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gatelab.gates.export import summary  # noqa: E402
from gatelab.gates.train import TrainConfig, fit, save_checkpoint  # noqa: E402
from gatelab.reproduce import Report, register  # noqa: E402

L0ARM = "Li & Ji, L0-ARM: Network Sparsification via Stochastic Binary Optimization, arXiv:1904.04432"

# Louizos, Welling & Kingma (arXiv:1712.01312), Table 1, the "L0" rows (hard concrete gates): a reference,
# not the cited paper. The L0-ARM paper's own table could not be retrieved in this workplace, so the paper
# column stays empty.
REFERENCE = {
    "mlp": {"architecture": "219-214-100", "error": 1.4},
    "lenet5": {"architecture": "20-25-45-462", "error": 0.9},
}
REFERENCE_SOURCE = "Louizos et al. 2018, Table 1"
METHODS = {"arm": "L0-ARM", "hard_concrete": "L0-HC (hard concrete)"}
# What --quick changes from the paper's settings (200 epochs on every training image).
QUICK = {"mlp": {"epochs": 3}, "lenet5": {"epochs": 1}}


def _arch_params(model: str, arch: str) -> int:
    """Parameters of a pruned architecture written as kept units per gated layer."""
    k = [int(v) for v in arch.split("-")]
    if model == "mlp":  # kept inputs of fc1, fc2, fc3
        return k[0] * k[1] + k[1] + k[1] * k[2] + k[2] + k[2] * 10 + 10
    # LeNet-5-Caffe: conv1, conv2 output channels; fc1, fc2 kept inputs
    return (25 * k[0] + k[0]) + (25 * k[0] * k[1] + k[1]) + (k[2] * k[3] + k[3]) + (k[3] * 10 + 10)


def _train(report: Report, key: str, config: TrainConfig) -> dict:
    """Train one model (resuming its checkpoint if a previous session left one); its JSON-able results."""
    trained, history = fit(config, **report.trainer_options(key))
    save_checkpoint(trained.cpu(), config, report.folder / f"{key}.safetensors")  # `gatelab gates summary` reads it
    return {"summary": summary(trained).to_dict(), "history": asdict(history)}


def _run(report: Report, model: str, quick: bool, seed: int) -> None:
    ref = REFERENCE[model]
    ref_params = _arch_params(model, ref["architecture"])
    results = {}
    for estimator, label in METHODS.items():
        key = f"{model}-{estimator}"
        config = TrainConfig(model=model, estimator=estimator, seed=seed, device=report.device)
        for name, value in (QUICK[model] if quick else {}).items():
            setattr(config, name, value)
        report.settings[f"{key} config"] = asdict(config)
        result = results[estimator] = report.stage(key, lambda key=key, config=config: _train(report, key, config))
        s, history = result["summary"], result["history"]
        err = history["test_error"]
        report.row(
            f"{label}: kept architecture",
            None,
            s["architecture"],
            reference=ref["architecture"],
            source=f"{REFERENCE_SOURCE}, L0",
        )
        report.row(f"{label}: test error (%)", None, round(err, 2), reference=ref["error"], source=REFERENCE_SOURCE)
        report.row(
            f"{label}: parameters",
            None,
            s["params_kept"],
            f"of {s['params_dense']:,} dense",
            reference=ref_params,
            source=f"counted from {REFERENCE_SOURCE}'s architecture",
        )
        report.row(
            f"{label}: FLOPs (multiply-adds)",
            None,
            s["flops_kept"],
            f"{100 * s['flops_kept'] / s['flops_dense']:.1f}% of {s['flops_dense']:,} dense",
        )
        report.results[estimator] = result
        met = err <= ref["error"] + 0.2 and s["params_kept"] <= ref_params
        report.note(
            f"{label}: target (test error within 0.2 points of {ref['error']}% with no more parameters than "
            f"{ref['architecture']}) {'met' if met else 'NOT met'} after {config.epochs} epochs: {err:.2f}% "
            f"error, {s['params_kept']:,} parameters"
            + ("" if met or not quick else " (a --quick run trains far fewer epochs than the paper's 200)")
        )
    report.note(
        f"Paper column empty: the L0-ARM paper's own numbers (arXiv:1904.04432, Table 1) could not be retrieved "
        f"here. Reference column: {REFERENCE_SOURCE} (hard concrete L0), compared with both methods."
    )
    report.note(
        f"Validation: {config.val_size} training images carved out (seeded) and measured every epoch; "
        "the test split is read once per model, after its last epoch."
    )
    report.settings["epochs"] = config.epochs
    report.settings["validation images"] = config.val_size
    _plots(report, model, {e: r["history"] for e, r in results.items()}, ref)


def _plots(report: Report, model: str, histories: dict, ref: dict) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for estimator, h in histories.items():
        axes[0].plot(h["epoch"], h["val_error"], marker=".", label=METHODS[estimator])
        axes[1].plot(h["epoch"], h["kept_units"], marker=".", label=METHODS[estimator])
    axes[0].axhline(ref["error"], color="grey", ls="--", label="Louizos et al. (test)")
    axes[1].axhline(sum(int(v) for v in ref["architecture"].split("-")), color="grey", ls="--", label="Louizos et al.")
    axes[0].set(xlabel="epoch", ylabel="validation error (%)", yscale="log", title=f"{model}: validation error")
    axes[1].set(xlabel="epoch", ylabel="kept units (all gated layers)", title=f"{model}: kept units")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    report.save_figure(fig, "training.png")

    fig, ax = plt.subplots(figsize=(6, 3.8))
    layers = len(ref["architecture"].split("-"))
    width = 0.8 / (len(histories) + 1)
    series = {
        "Louizos et al.": ref["architecture"],
        **{METHODS[e]: h["architecture"][-1] for e, h in histories.items()},
    }
    for i, (label, arch) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(layers)], [int(v) for v in arch.split("-")], width, label=label)
    ax.set_xticks([x + width for x in range(layers)], [f"layer {i + 1}" for i in range(layers)])
    ax.set(ylabel="kept units", title=f"{model}: kept architecture")
    ax.legend()
    report.save_figure(fig, "architecture.png")


@register("l0arm-mlp", "L0-ARM vs hard concrete, MLP 784-300-100 on MNIST", L0ARM)
def l0arm_mlp(report: Report, quick: bool, seed: int) -> None:
    _run(report, "mlp", quick, seed)


@register("l0arm-lenet5", "L0-ARM vs hard concrete, LeNet-5-Caffe on MNIST", L0ARM)
def l0arm_lenet5(report: Report, quick: bool, seed: int) -> None:
    _run(report, "lenet5", quick, seed)
