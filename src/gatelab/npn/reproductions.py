"""Neural Plasticity Networks: two moons grown and pruned, and MNIST from small and full starts."""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch

from gatelab.data.synthetic import two_moons
from gatelab.files import write_json
from gatelab.gates import export, mlp, summary
from gatelab.npn.plasticity import KSchedule, make_plastic, train_plastic
from gatelab.npn.plots import active_units_figure, decision_boundaries_figure, transition_rate_figure
from gatelab.npn.train import NPNConfig, dense_baseline, fit_npn, quick_config
from gatelab.reproduce import Report, register

NPN = "Li & Ji, Neural Plasticity Networks, arXiv:1908.08118"

# Two moons: MLP 2-100-80-2 with gates on the two hidden layers (the inputs of fc2 and fc3).
# Expansion starts from 3-3 active units, pruning from 100-80, as in the authors' synthetic
# experiment, both with the same k and lambda so that their end sizes can be compared. The authors
# expand at k = 1; here a 3-3 network at k = 1 (each gate open with probability ~0.6) did not learn
# at all, so both use k = 7. Both end with hardening (k = 5000).
MOONS = {
    "expansion": dict(init_active=[3 / 100, 3 / 80], k=7.0, lam=[0.05, 2.0], fill=0.1),
    "pruning": dict(init_active=1.0, k=7.0, lam=[0.05, 2.0], fill=0.0),
}
MOONS_LR = 1e-2


@register("npn-moons", "NPN on two moons (synthetic): an MLP grown from 3-3 and pruned from 100-80", NPN)
def npn_moons(report: Report, quick: bool, seed: int) -> None:
    torch.manual_seed(seed)
    x, y = two_moons(1000, noise=0.15, seed=seed)
    train, val = (x[:500], y[:500]), (x[500:], y[500:])
    epochs, plastic_from, harden_from = (150, 10, 120) if quick else (2000, 100, 1000)
    logs, snapshots = {}, {}
    for mode, p in MOONS.items():
        model = make_plastic(
            mlp(2, (100, 80), 2), init_active=p["init_active"], k=p["k"], lam=p["lam"], layers=["fc2", "fc3"]
        )
        schedule = KSchedule(k=p["k"], plastic_from=plastic_from, harden_from=harden_from)
        marks = {
            1,
            plastic_from + (harden_from - plastic_from) // 4,
            (plastic_from + harden_from) // 2,
            harden_from,
            epochs,
        }
        snaps = []

        def keep_snapshot(epoch, m, log, snaps=snaps, marks=marks):
            if epoch in marks:
                snaps.append((epoch, log.architecture(), copy.deepcopy(m)))

        log = train_plastic(
            model,
            train,
            val,
            epochs,
            schedule,
            lr=MOONS_LR,
            batch_size=32,
            expand_fill=p["fill"],
            harden=True,
            on_epoch=keep_snapshot,
        )
        logs[mode], snapshots[mode] = log, snaps
        start = "-".join(str(log.active[n][0] - log.switched_on[n][0] + log.switched_off[n][0]) for n in log.total)
        report.row(f"{mode}: active hidden units (start -> end)", None, f"{start} -> {log.architecture()}")
        report.row(f"{mode}: validation error (%)", None, round(log.val_error[-1], 2))
        report.row(
            f"{mode}: switches during hardening",
            0,
            sum(
                log.switched_on[n][i] + log.switched_off[n][i]
                for n in log.total
                for i, s in enumerate(log.stage)
                if s == "hardening" and i > log.stage.index("hardening")
            ),
        )
        report.results[mode] = asdict(log)
        report.settings[mode] = {
            **p,
            "epochs": epochs,
            "plastic_from": plastic_from,
            "harden_from": harden_from,
            "lr": MOONS_LR,
            "batch_size": 32,
        }
    report.note(
        "Data: two moons, synthetic (seeded), 500 training and 500 validation points, noise 0.15; "
        "the authors embed the moons in 100 dimensions, here they stay 2-D."
    )
    report.note(
        "The paper shows this experiment as figures (decision boundaries over time), without a table; "
        "the claim checked is that expansion and pruning reach compact networks of similar accuracy "
        "and that no unit switches once the gates are hardened."
    )
    report.save_figure(active_units_figure(logs), "active_units.png")
    report.save_figure(transition_rate_figure(logs), "transition_rate.png")
    report.save_figure(decision_boundaries_figure(snapshots, *val), "decision_boundaries.png")


@register("npn-mnist", "NPN on MNIST: MLP and LeNet-5 expanded from 10% and pruned from 100%", NPN)
def npn_mnist(report: Report, quick: bool, seed: int) -> None:
    logs = {}
    for model_name in ("mlp", "lenet5"):
        for label, init in (("expand from 10%", 0.1), ("prune from 100%", 1.0)):
            config = (
                quick_config(model_name, init, seed)
                if quick
                else NPNConfig(model=model_name, init_active=init, seed=seed)
            )
            log_path = report.folder / f"{model_name}-{init:g}-log.json"
            model, log = fit_npn(config, on_epoch=lambda e, m, lg, p=log_path: write_json(p, asdict(lg)))
            s = summary(model)
            small = export(model)
            logs[f"{model_name}, {label}"] = log
            report.row(f"{model_name}, {label}: architecture", None, log.architecture())
            report.row(f"{model_name}, {label}: test error (%)", None, round(log.val_error[-1], 2))
            report.row(
                f"{model_name}, {label}: parameters (exported)",
                None,
                sum(p.numel() for p in small.parameters()),
                f"of {s.params_dense:,} dense",
            )
            report.results[f"{model_name}-{init:g}"] = {
                "config": asdict(config.resolved()),
                "log": asdict(log),
                "summary": s.to_dict(),
            }
        dense = dense_baseline(quick_config(model_name, 1.0, seed) if quick else NPNConfig(model=model_name))
        report.row(f"{model_name}, dense baseline: test error (%)", None, round(dense, 2), "same epochs")
    report.note(
        "The NPN paper's MNIST table could not be retrieved offline, so the paper column is empty; "
        "the claim checked is that both starts reach compact architectures of similar size with "
        "accuracy close to the dense baseline."
    )
    if quick:
        report.note(
            "--quick: 10,000 training images and 10 epochs (MLP) or 5 (LeNet-5), one ordinary, then "
            "plastic, one hardening, instead of the authors' 500 epochs (plasticity from 100 to 350); "
            "numbers are not comparable to the paper."
        )
    report.save_figure(active_units_figure(logs), "active_units.png")
    report.save_figure(transition_rate_figure(logs), "transition_rate.png")
