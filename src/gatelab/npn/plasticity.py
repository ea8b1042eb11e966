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
import os
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gatelab.checkpoint import Checkpointer, check_resumable, load_state, rng_state, set_rng_state
from gatelab.devices import resolve_device
from gatelab.errors import GatelabError
from gatelab.evaluation import classifier_scores
from gatelab.gates import Gate, gates, regularizer, sparsify, train_step, undecided_gates
from gatelab.progress import ScalarLog, bar, say

FORMAT = "npn"  # the kind of checkpoint train_plastic writes
K_HARD = 5000.0  # the authors' "k -> infinity": sigmoid(5000 phi) is 0 or 1 for any |phi| > 0.01
# The authors' start (leo-yangli/npns, ARMConv.py and ARMDense.py): phi = 3 / k and -40 / k at the k that
# NPNLeNet5 is built with, 7, before the schedule sets k. So ``make_plastic`` places ``logits`` at
# k = LOGITS_K whatever k the run starts at: at k = 7 active units are open w.p. 0.95, hibernating ones
# never; at the expansion's k = 1, 0.61 and 0.0033.
AUTHORS_LOGITS = (3.0, -40.0)
LOGITS_K = 7.0
SYMMETRIC_LOGITS = (math.log(9), -math.log(9))  # ours before: every gate on the wrong side one draw in ten
TRIGGERS = ("loss", "error")


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


def _gates(model: nn.Module) -> list[Gate]:
    """The model's gates; none for a dense model, which ``train_plastic`` trains as the baseline."""
    return [m for m in model.modules() if isinstance(m, Gate)]


def set_k(model: nn.Module, k: float) -> None:
    """Set the gate slope k of every gate of a plastic network."""
    if not (k >= 0 and math.isfinite(k)):
        raise GatelabError(f"k must be a finite number >= 0 (0 is dropout), got {k}")
    for g in _gates(model):
        g.estimator.g.k = float(k)


def active_units(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per gated layer, which units are active (phi > 0) rather than hibernating."""
    return {g.layer: (g.phi.detach() > 0).clone() for g in _gates(model)}


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
    logits: tuple[float, float] = AUTHORS_LOGITS,
) -> nn.Module:
    """Turn ``model`` into a plastic network (in place) and return it.

    init_active: the fraction of units active at the start, in (0, 1] (one value,
      one per gated layer, or a mapping): 1.0 to prune from the full network,
      e.g. 0.1 to expand from a tenth of it. The active units are each layer's
      first ones, as the authors': so a Linear after a Conv2d reads the channels
      that are awake (LeNet-5's 3-3-3 start: fc1's first 48 inputs are conv2's
      first 3 channels). Random choices per layer would leave fc1 reading mostly
      hibernating channels, a network that cannot learn.
    k: the gates' slope at the start.
    logits: k phi of an active and of a hibernating unit at k = ``LOGITS_K`` (7), as the
      authors place them: phi = (3 / 7, -40 / 7) by default, whatever ``k``. At k = 7 a
      hibernating unit is never drawn; at k = 1 (the authors' expansion) active units
      are open with probability 0.61 and hibernating ones 0.0033, so a sleeping unit is
      drawn now and then. With a symmetric start such as (2.2, -2.2) at k = 7, every
      hibernating unit is open one draw in ten.
    lam, granularity, layers: as in ``gatelab.gates.sparsify``.
    """
    on, off = (float(v) for v in logits)
    if not (math.isfinite(on) and math.isfinite(off) and on > 0 > off):
        raise GatelabError(f"logits must be (active > 0, hibernating < 0), finite, got {tuple(logits)}")
    sparsify(model, granularity, "arm", lam=lam, keep_prob=0.5, k=max(k, 1e-3), layers=layers)
    model_gates = gates(model)
    fractions = _spread(init_active, [g.layer for g in model_gates])
    for name, f in fractions.items():
        if not 0 < f <= 1:
            raise GatelabError(f"init_active for {name!r} is {f}; accepted: a fraction in (0, 1]")
    with torch.no_grad():
        for g in model_gates:
            n = g.phi.numel()
            n_active = max(1, round(fractions[g.layer] * n))
            phi = torch.full((n,), off / LOGITS_K)
            phi[:n_active] = on / LOGITS_K
            g.phi.copy_(phi.view_as(g.phi))
    set_k(model, k)
    return model


@dataclass
class PlasticityLog:
    """Per epoch: k, stage, training loss, validation numbers, and per layer the active units and switches.

    ``test_loss`` and ``test_error`` are filled once, after training, by whoever reads the test split.
    """

    epoch: list[int] = field(default_factory=list)
    k: list[float] = field(default_factory=list)
    stage: list[str] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_error: list[float] = field(default_factory=list)
    active: dict[str, list[int]] = field(default_factory=dict)
    switched_on: dict[str, list[int]] = field(default_factory=dict)
    switched_off: dict[str, list[int]] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    test_loss: float | None = None
    test_error: float | None = None

    def transition_rate(self) -> list[float]:
        """Fraction of all units that switched state in each epoch."""
        units = sum(self.total.values())
        return [
            sum(self.switched_on[n][i] + self.switched_off[n][i] for n in self.total) / units
            for i in range(len(self.epoch))
        ]

    def architecture(self, i: int = -1) -> str:
        return "-".join(str(self.active[n][i]) for n in self.total)


def _harden(model: nn.Module, k: float) -> None:
    """Push every phi at least 250 / k away from 0, so that sigmoid(k phi) is exactly 0 or 1 in float32.

    ARM's gradient and the penalty's then vanish, and no optimiser momentum left from
    the plastic stage can carry a unit across 0: the architecture is frozen.
    """
    floor = 250.0 / k
    with torch.no_grad():
        for g in _gates(model):
            sign = torch.where(g.phi > 0, 1.0, -1.0)
            g.phi.copy_(sign * g.phi.abs().clamp(min=floor))


def _wake(model: nn.Module, fill: float, k: float) -> None:
    """Activate a ``fill`` fraction of each layer's hibernating units (our expansion step).

    A woken unit starts open with probability 0.9 at the current k, easy to put back to sleep.
    """
    with torch.no_grad():
        for g in _gates(model):
            sleeping = (g.phi.view(-1) <= 0).nonzero().squeeze(1)
            n = math.ceil(fill * len(sleeping))
            if n:
                chosen = sleeping[torch.randperm(len(sleeping))[:n].to(sleeping.device)]
                g.phi.view(-1)[chosen] = math.log(9) / k


def _grow(model: nn.Module, size: dict[str, int]) -> None:
    """The authors' expansion step: one new unit in each layer whose units are all awake.

    As ``expand_layer`` in ``leo-yangli/npns`` (models/layer/ARMConv.py, ARMDense.py):
    ``size`` counts the units a layer was given (its start plus the units grown);
    the new unit is the next one in order (unit ``size``), its phi drawn from
    N(0, 0.01^2) (k phi ~ 0 at k = 1: open about half the time) and its weights
    left as they are. A layer skips the step while any of its units is asleep
    (phi <= 0) and grows again at a later step once that unit has woken.
    """
    with torch.no_grad():
        for g in _gates(model):
            flat = g.phi.view(-1)
            if size[g.layer] < len(flat) and int((flat > 0).sum()) >= size[g.layer]:
                flat[size[g.layer]] = 1e-2 * torch.randn(())
                size[g.layer] += 1


def _dense_step(model: nn.Module, inputs, targets, optimizer, dataset_size: int, weight_decay: float = 0.0) -> dict:
    """One plain cross-entropy step (plus weight_decay / 2 ||theta||^2): the dense baseline's training."""
    model.train()
    loss = F.cross_entropy(model(inputs), targets)
    if weight_decay:
        loss = loss + 0.5 * weight_decay * sum(p.square().sum() for p in model.parameters())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.detach()}


def train_plastic(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    schedule: KSchedule,
    lr: float = 1e-3,
    batch_size: int = 128,
    expand_fill: float = 0.0,
    expand_units: bool = False,
    trigger: str = "error",
    weight_decay: float = 0.0,
    lr_decay_at: int | None = None,
    harden: bool = False,
    device: str | torch.device = "cpu",
    quiet: bool = False,
    log_dir: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 300.0,
    resume: str | os.PathLike | None = None,
    config: Mapping[str, Any] | None = None,
    on_epoch: Callable[[int, nn.Module, PlasticityLog], None] | None = None,
) -> PlasticityLog:
    """Train a plastic network with Adam and the k schedule; log active units and switches per layer.

    val: a validation split carved from the training data; the expansion trigger
      reads it, so it must not be the test split.
    expand_fill, expand_units: the expansion step, taken during the plastic stage each
      time the validation ``trigger`` improves: wake this fraction of every layer's
      hibernating units, or (``expand_units``, the authors' rule) one unit in every
      layer that has kept all the units it was given (see ``_grow``). Neither: growth
      is left to the gates alone.
    trigger: ``loss`` (the authors': validation cross-entropy plus the regularizer,
      so growth must pay for its L0 and L2 cost) or ``error`` (the validation error;
      it stops improving once the task is fitted, so the network stops growing).
    weight_decay: the authors' gated expected-L2 term (5e-4 in their LeNet-5).
    lr_decay_at: the learning rate is multiplied by 0.1 from this epoch on (the authors': 401).
    harden: require the schedule to end in a hardening stage.
    device: where the model, the data and the gates live; statistics stay there
      and are read once an epoch.
    checkpoint, checkpoint_every, resume: save the whole training state (model and
      gates, Adam, position in the k schedule and in the epoch, the expansion
      trigger's best error, RNG states, log, ``config``) to ``checkpoint`` at each
      epoch's end and at most every ``checkpoint_every`` seconds, and continue from
      the file ``resume``; a resumed run equals an uninterrupted one.
    log_dir: also write TensorBoard scalars there.

    A model without gates is trained densely by the same loop (the dense baseline).
    """
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise GatelabError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    if not 0 <= expand_fill <= 1:
        raise GatelabError(f"expand_fill must be in [0, 1], got {expand_fill}")
    if expand_fill and expand_units:
        raise GatelabError("choose one expansion step: expand_fill (a fraction) or expand_units (one unit a layer)")
    if trigger not in TRIGGERS:
        raise GatelabError(f"unknown expansion trigger {trigger!r}; accepted: {', '.join(TRIGGERS)}")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise GatelabError(f"weight_decay must be a finite number >= 0, got {weight_decay}")
    if lr_decay_at is not None and lr_decay_at < 2:
        raise GatelabError(f"lr_decay_at is a 1-based epoch after the first, got {lr_decay_at}")
    schedule.validate(epochs, harden)
    for name, (inputs, labels) in (("training", train), ("validation", val)):
        if len(inputs) != len(labels) or len(inputs) == 0:
            raise GatelabError(
                f"{name} data needs as many labels as inputs, and at least one; got {len(inputs)} and {len(labels)}"
            )
    device = resolve_device(device)
    model.to(device)
    x, y = (t.to(device) for t in train)
    xv, yv = (t.to(device) for t in val)
    n, n_batches = len(x), math.ceil(len(x) / batch_size)
    model_gates = _gates(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    settings = {
        "epochs": epochs,
        "schedule": asdict(schedule),
        "lr": lr,
        "batch_size": batch_size,
        "expand_fill": expand_fill,
        "expand_units": expand_units,
        "trigger": trigger,
        "weight_decay": weight_decay,
        "lr_decay_at": lr_decay_at,
        "harden": harden,
        "train_size": n,
        "val_size": len(xv),
        **(config or {}),
    }
    log = PlasticityLog()
    previous = active_units(model)
    log.total = {name: int(mask.numel()) for name, mask in previous.items()}
    for name in log.total:
        log.active[name], log.switched_on[name], log.switched_off[name] = [], [], []
    size = {name: int(mask.sum()) for name, mask in previous.items()}  # units each layer was given
    best, start, order = math.inf, (1, 0), None
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    if resume is not None:
        state = load_state(resume)
        check_resumable(state, FORMAT, settings, resume, may_differ=("device",))
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            log = PlasticityLog(**state["log"])
            previous = {name: mask.to(device) for name, mask in state["previous"].items()}
            best, start, order = state["best"], (state["epoch"], state["step"]), state["order"]
            size = dict(state["size"])
            loss_sum.copy_(state["loss_sum"])
            set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            reason = (str(exc).splitlines() or [""])[0][:200]
            raise GatelabError(
                f"{resume} is not a checkpoint of this network ({type(exc).__name__}: {reason})"
            ) from None
        say(f"resuming {resume} at epoch {start[0]}, step {start[1]}", quiet)

    def state(epoch: int, step: int, order: torch.Tensor | None) -> dict:
        return {
            "format": FORMAT,
            "config": settings,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "log": asdict(log),
            "previous": {name: mask.cpu() for name, mask in previous.items()},
            "best": best,
            "size": size,
            "epoch": epoch,
            "step": step,
            "order": order,
            "loss_sum": loss_sum.cpu(),
            "rng": rng_state(),
        }

    with Checkpointer(checkpoint, checkpoint_every) as ckpt, ScalarLog(log_dir) as scalars:
        for epoch in range(start[0], epochs + 1):
            k, stage = schedule.at(epoch), schedule.stage(epoch)
            set_k(model, k)
            for group in optimizer.param_groups:
                group["lr"] = lr * (0.1 if lr_decay_at is not None and epoch >= lr_decay_at else 1.0)
            if order is None:  # a new epoch; a resumed one continues with its saved order and position
                if stage == "hardening":
                    _harden(model, k)
                order = torch.randperm(n)
                loss_sum.zero_()
            # Every gate decided (k = 5000, before plasticity and once hardened): ARM's second pass would draw
            # the same gates, so its gradient is 0; skipping it makes these epochs cost ordinary training.
            # No gate drifts undecided within such an epoch: phi's gradient is 0 at a saturated sigmoid, and |phi| is
            # at least 250 / k once hardened (3 / 7 and 40 / 7 at the authors' start), far beyond Adam's leftover steps.
            if model_gates:
                step_fn = partial(train_step, weight_decay=weight_decay, antithetic=bool(undecided_gates(model, 0, 1)))
            else:  # no gates: the dense baseline
                step_fn = partial(_dense_step, weight_decay=weight_decay)
            first = start[1] if epoch == start[0] else 0
            batches = order.to(device).split(batch_size)
            with bar(n_batches, f"epoch {epoch}", "batch", quiet, initial=first) as progress:
                for i in range(first, n_batches):
                    idx = batches[i]
                    loss_sum += step_fn(model, x[idx], y[idx], optimizer, dataset_size=n)["loss"]
                    ckpt.step(partial(state, epoch, i + 1, order))
                    progress.update()
            scores = classifier_scores(model, xv, yv)
            now = active_units(model)
            log.epoch.append(epoch)
            log.k.append(k)
            log.stage.append(stage)
            log.loss.append(float(loss_sum) / n_batches)
            log.val_loss.append(scores["loss"])
            log.val_error.append(scores["error"])
            for name in log.total:
                log.active[name].append(int(now[name].sum()))
                log.switched_on[name].append(int((now[name] & ~previous[name]).sum()))
                log.switched_off[name].append(int((~now[name] & previous[name]).sum()))
            previous = now
            # The loss is compared with the plastic stage's best so far (the authors'), the error with every
            # epoch's: the first plastic epoch grows the network only if it beats the ordinary stage.
            if (expand_fill or expand_units) and (stage == "plastic" or trigger == "error"):
                watched = scores["error"]
                if trigger == "loss":
                    with torch.no_grad():
                        watched = scores["loss"] + float(regularizer(model, n, weight_decay))
                if stage == "plastic" and watched < best:
                    _wake(model, expand_fill, k) if expand_fill else _grow(model, size)
                    previous = active_units(model)
                best = min(best, watched)
            switches = sum(log.switched_on[name][-1] + log.switched_off[name][-1] for name in log.total)
            say(
                f"epoch {epoch:4d}/{epochs}  k {k:g}  loss {log.loss[-1]:.4f}  val error {scores['error']:5.2f}%"
                + (f"  active {log.architecture()}  switches {switches}" if log.total else ""),
                quiet,
            )
            scalars.add(
                epoch,
                loss=log.loss[-1],
                val_loss=scores["loss"],
                val_error=scores["error"],
                switches=switches if log.total else None,
                **{f"active/{name}": log.active[name][-1] for name in log.total},
            )
            if on_epoch:
                on_epoch(epoch, model, log)
            order = None
            ckpt.epoch_end(partial(state, epoch + 1, 0, None))
    return log
