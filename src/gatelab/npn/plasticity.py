"""Neural Plasticity Networks: gates whose slope k moves training from dropout to plasticity to hardening.

Every unit carries an ARM-trained binary gate z ~ Bernoulli(sigmoid(k phi)).
k = 0 makes every gate a fair coin (dropout with rate 1/2); a moderate k lets
units switch between active (phi > 0) and hibernating (phi < 0) as the L0
cost-benefit trade-off dictates; a very large k makes the gates deterministic,
1[phi > 0], which is ordinary training of the active sub-network and, late in
training, hardens the architecture (ARM's gradient for phi vanishes there, so
no unit switches any more).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gatelab.errors import GatelabError
from gatelab.gates import gates, sparsify, train_step

K_HARD = 5000.0  # the authors' "k -> infinity": sigmoid(5000 phi) is 0 or 1 for any |phi| > 0.01


@dataclass
class KSchedule:
    """k per epoch (1-based): ``k_hard`` before ``plastic_from``, ``k`` until ``harden_from``, then ``k_hard``.

    The authors' schedule has three stages: ordinary training (k = 5000), plasticity
    (k = 7 to prune, k = 1 to expand) and hardening (k = 5000 again).
    ``KSchedule(k)`` alone is a constant k.
    """

    k: float = 7.0
    plastic_from: int = 1
    harden_from: int | None = None
    k_hard: float = K_HARD

    def validate(self, epochs: int | None = None, harden: bool = False) -> "KSchedule":
        for name in ("k", "k_hard"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise GatelabError(f"{name} must be a finite number >= 0 (0 is dropout), got {v}")
        if self.plastic_from < 1:
            raise GatelabError(f"plastic_from is a 1-based epoch, got {self.plastic_from}")
        if self.harden_from is not None and self.harden_from <= self.plastic_from:
            raise GatelabError(f"harden_from ({self.harden_from}) must come after plastic_from ({self.plastic_from})")
        if harden:
            if self.harden_from is None or (epochs is not None and self.harden_from > epochs):
                raise GatelabError(
                    f"hardening was asked for but the schedule never hardens within {epochs} "
                    f"epochs (harden_from={self.harden_from}); set harden_from <= epochs"
                )
            if self.k_hard < 1000:
                raise GatelabError(f"k_hard={self.k_hard} is too small to harden the gates; use >= 1000")
        return self

    def at(self, epoch: int) -> float:
        if epoch < self.plastic_from or (self.harden_from is not None and epoch >= self.harden_from):
            return self.k_hard
        return self.k

    def stage(self, epoch: int) -> str:
        if epoch < self.plastic_from:
            return "ordinary"
        if self.harden_from is not None and epoch >= self.harden_from:
            return "hardening"
        return "plastic"


def set_k(model: nn.Module, k: float) -> None:
    """Set the gate slope k of every gate of a plastic network."""
    if not (k >= 0 and math.isfinite(k)):
        raise GatelabError(f"k must be a finite number >= 0 (0 is dropout), got {k}")
    for g in gates(model):
        g.estimator.g.k = float(k)


def active_units(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per gated layer, which units are active (phi > 0) rather than hibernating."""
    return {g.layer: (g.phi.detach() > 0).clone() for g in gates(model)}


def _spread(value, names: list[str]) -> dict[str, float]:
    if isinstance(value, Mapping):
        missing = [n for n in names if n not in value]
        if missing:
            raise GatelabError(f"init_active gives no value for gated layers {missing}")
        return {n: float(value[n]) for n in names}
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != len(names):
            raise GatelabError(f"init_active has {len(value)} values for {len(names)} gated layers {names}")
        return dict(zip(names, map(float, value)))
    return {n: float(value) for n in names}


def make_plastic(
    model: nn.Module,
    init_active: float | Sequence[float] | Mapping[str, float] = 1.0,
    k: float = 7.0,
    lam: float | Sequence[float] | Mapping[str, float] = 0.1,
    granularity: str = "structured",
    layers: Sequence[str] | None = None,
    margin: float = 0.9,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Turn ``model`` into a plastic network (in place) and return it.

    init_active: the fraction of units active at the start, in (0, 1] (one value,
      one per gated layer, or a mapping): 1.0 to prune from the full network,
      e.g. 0.1 to expand from a tenth of it.
    k: the slope used to place phi, so that at this k an active unit is open with
      probability ``margin`` and a hibernating one with ``1 - margin``.
    lam, granularity, layers: as in ``gatelab.gates.sparsify``.
    """
    if not 0.5 < margin < 1:
        raise GatelabError(f"margin must be in (0.5, 1), got {margin}")
    sparsify(model, granularity, "arm", lam=lam, keep_prob=0.5, k=max(k, 1e-3), layers=layers)
    model_gates = gates(model)
    fractions = _spread(init_active, [g.layer for g in model_gates])
    for name, f in fractions.items():
        if not 0 < f <= 1:
            raise GatelabError(f"init_active for {name!r} is {f}; accepted: a fraction in (0, 1]")
    magnitude = math.log(margin / (1 - margin)) / (k if k > 0 else 1.0)
    with torch.no_grad():
        for g in model_gates:
            n = g.phi.numel()
            n_active = max(1, round(fractions[g.layer] * n))
            order = torch.randperm(n, generator=generator)
            phi = torch.full((n,), -magnitude)
            phi[order[:n_active]] = magnitude
            g.phi.copy_(phi.view_as(g.phi))
    set_k(model, k)
    return model


@dataclass
class PlasticityLog:
    """Per epoch: k, stage, validation numbers, and per layer the active units and switches."""

    epoch: list[int] = field(default_factory=list)
    k: list[float] = field(default_factory=list)
    stage: list[str] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_error: list[float] = field(default_factory=list)
    active: dict[str, list[int]] = field(default_factory=dict)
    switched_on: dict[str, list[int]] = field(default_factory=dict)
    switched_off: dict[str, list[int]] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)

    def transition_rate(self) -> list[float]:
        """Fraction of all units that switched state in each epoch."""
        units = sum(self.total.values())
        return [
            sum(self.switched_on[n][i] + self.switched_off[n][i] for n in self.total) / units
            for i in range(len(self.epoch))
        ]

    def architecture(self, i: int = -1) -> str:
        return "-".join(str(self.active[n][i]) for n in self.total)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> tuple[float, float]:
    """Mean cross-entropy and error (%) with the deterministic test-time gates."""
    model.eval()
    loss, wrong = 0.0, 0
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size])
        loss += float(F.cross_entropy(out, y[i : i + batch_size], reduction="sum"))
        wrong += int((out.argmax(1) != y[i : i + batch_size]).sum())
    return loss / len(x), 100.0 * wrong / len(x)


def _harden(model: nn.Module, k: float) -> None:
    """Push every phi at least 250 / k away from 0, so that sigmoid(k phi) is exactly 0 or 1 in float32.

    ARM's gradient and the penalty's then vanish, and no optimiser momentum left from
    the plastic stage can carry a unit across 0: the architecture is frozen.
    """
    floor = 250.0 / k
    with torch.no_grad():
        for g in gates(model):
            sign = torch.where(g.phi > 0, 1.0, -1.0)
            g.phi.copy_(sign * g.phi.abs().clamp(min=floor))


def _wake(model: nn.Module, fill: float) -> None:
    """Activate a ``fill`` fraction of each layer's hibernating units (the authors' expansion step).

    A woken unit's phi is mirrored to the positive side, so it is as easy to put back to sleep.
    """
    with torch.no_grad():
        for g in gates(model):
            sleeping = (g.phi.view(-1) <= 0).nonzero().squeeze(1)
            n = math.ceil(fill * len(sleeping))
            if n:
                chosen = sleeping[torch.randperm(len(sleeping))[:n]]
                g.phi.view(-1)[chosen] = g.phi.view(-1)[chosen].abs()


def train_plastic(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    schedule: KSchedule,
    lr: float = 1e-3,
    batch_size: int = 128,
    expand_fill: float = 0.0,
    harden: bool = False,
    progress: Callable[[str], None] | None = None,
    on_epoch: Callable[[int, nn.Module, PlasticityLog], None] | None = None,
) -> PlasticityLog:
    """Train a plastic network with Adam and the k schedule; log active units and switches per layer.

    expand_fill: during the plastic stage, each time the validation error improves,
      wake this fraction of every layer's hibernating units (the authors' expansion
      step; 0 leaves growth to the gates alone). The authors wake on a better
      validation *loss*; that keeps falling on tasks the network already fits (its
      confidence grows), which grows the network needlessly, so the error is used.
    harden: require the schedule to end in a hardening stage.
    """
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise GatelabError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    if not 0 <= expand_fill <= 1:
        raise GatelabError(f"expand_fill must be in [0, 1], got {expand_fill}")
    schedule.validate(epochs, harden)
    x, y = train
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    log = PlasticityLog()
    previous = active_units(model)
    log.total = {name: int(mask.numel()) for name, mask in previous.items()}
    for name in log.total:
        log.active[name], log.switched_on[name], log.switched_off[name] = [], [], []
    best_error = math.inf
    for epoch in range(1, epochs + 1):
        k = schedule.at(epoch)
        set_k(model, k)
        if schedule.stage(epoch) == "hardening":
            _harden(model, k)
        order = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            train_step(model, x[idx], y[idx], optimizer, dataset_size=len(x))
        val_loss, val_error = evaluate(model, *val)
        now = active_units(model)
        log.epoch.append(epoch)
        log.k.append(k)
        log.stage.append(schedule.stage(epoch))
        log.val_loss.append(val_loss)
        log.val_error.append(val_error)
        for name in log.total:
            log.active[name].append(int(now[name].sum()))
            log.switched_on[name].append(int((now[name] & ~previous[name]).sum()))
            log.switched_off[name].append(int((~now[name] & previous[name]).sum()))
        previous = now
        if expand_fill and schedule.stage(epoch) == "plastic" and val_error < best_error:
            _wake(model, expand_fill)
            previous = active_units(model)
        best_error = min(best_error, val_error)
        if progress:
            progress(f"epoch {epoch:4d}  k {k:g}  val error {val_error:5.2f}%  active {log.architecture()}")
        if on_epoch:
            on_epoch(epoch, model, log)
    return log
