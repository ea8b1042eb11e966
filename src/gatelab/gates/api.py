"""Attach gates to any model, penalise them, and train with the estimator's extra pass."""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from gatelab.errors import GatelabError, check_choice
from gatelab.gates.compact import compact_forward, compactable
from gatelab.gates.estimators import ESTIMATORS, GATE_FUNCTIONS, make_estimator
from gatelab.gates.gate import Gate, GateMask
from gatelab.gates.graph import trace, unit_groups

GRANULARITIES = ("weight", "neuron", "channel", "structured")


@dataclass
class GateConfig:
    """How a model was sparsified; saved beside checkpoints."""

    granularity: str = "structured"
    estimator: str = "arm"
    gate_function: str = "scaled_sigmoid"
    k: float = 7.0
    lam: dict = field(default_factory=dict)  # gated layer -> lambda (per N training examples)
    keep_prob: dict = field(default_factory=dict)  # gated layer -> initial P(open)
    skipped: dict = field(default_factory=dict)  # layer -> why it was not gated
    input_shape: list | None = None  # one example's shape, recorded at the first forward


def per_layer(
    what: str,
    value,
    names: Sequence[str],
    valid: Callable[[float], bool] = lambda v: True,
    accepted: str = "a number",
    known: Iterable[str] | None = None,
) -> dict[str, float]:
    """Spread one number, a sequence (one per layer) or a mapping by name over the layer ``names``.

    The one per-layer spreader of gatelab.gates (lambda, keep probabilities, ...).
    Each value must be a real number passing ``valid``, else a GatelabError says
    ``accepted``. A mapping may also name the layers in ``known`` (say, layers
    that are not gated at this granularity); they are ignored.
    """
    names = list(names)
    if isinstance(value, Mapping):
        unknown = set(value) - set(names) - set(known or ())
        if unknown:
            raise GatelabError(f"{what} names unknown layers {sorted(unknown)}; gated layers: {names}")
        missing = [n for n in names if n not in value]
        if missing:
            raise GatelabError(f"{what} gives no value for gated layers {missing}")
        values = [value[n] for n in names]
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != len(names):
            raise GatelabError(f"{what} has {len(value)} values for {len(names)} gated layers {names}")
        values = list(value)
    else:
        values = [value] * len(names)
    out = {}
    for n, v in zip(names, values):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or not valid(v):
            raise GatelabError(f"{what} for {n!r} is {v!r}; accepted: {accepted}")
        out[n] = float(v)
    return out


def _candidates(model: nn.Module, granularity: str) -> dict[str, str]:
    """Layer name -> the kind of gate it gets at this granularity."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and granularity in ("weight", "neuron", "structured"):
            out[name] = "weight" if granularity == "weight" else "neuron"
        elif isinstance(m, nn.Conv2d) and granularity in ("weight", "channel", "structured"):
            out[name] = "weight" if granularity == "weight" else "channel"
    return out


def sparsify(
    model: nn.Module,
    granularity: str = "structured",
    estimator: str = "arm",
    lam: float | Sequence[float] | Mapping[str, float] = 0.1,
    keep_prob: float | Sequence[float] | Mapping[str, float] = 0.5,
    gate_function: str = "scaled_sigmoid",
    k: float = 7.0,
    layers: Sequence[str] | None = None,
) -> nn.Module:
    """Put stochastic binary gates on ``model``'s layers (in place) and return it.

    granularity: ``weight`` (every weight of Linear and Conv2d), ``neuron``
      (the input neurons of each Linear, as in both papers), ``channel`` (the
      output channels of each Conv2d, with any BatchNorm on their way), or
      ``structured`` (neurons and channels together: the papers' setting).
    estimator: ``arm`` (the paper's), ``ar``, ``hard_concrete`` or ``straight_through``.
    lam: the L0 strength per N training examples (the paper's lambda; a float,
      one per gated layer, or a mapping by layer name).
    keep_prob: the initial probability that a gate is open.
    gate_function, k: g(phi) for the Bernoulli estimators (``scaled_sigmoid``
      sigmoid(k phi), ``sigmoid``, ``hard_sigmoid``).
    layers: restrict gating to these layer names.

    Conv2d channels that flow into a residual addition (or anything else that
    keeps a zeroed channel from being removed) are left ungated; ``summary``
    lists them with the reason.
    """
    check_choice("granularity", granularity, GRANULARITIES)
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("gate function", gate_function, GATE_FUNCTIONS)
    if getattr(model, "gatelab_gates", None) is not None:
        raise GatelabError("this model already has gates; sparsify a fresh model")
    kinds = _candidates(model, granularity)
    skipped: dict[str, str] = {}
    if layers is not None:
        unknown = [n for n in layers if n not in kinds]
        if unknown:
            raise GatelabError(
                f"cannot gate {unknown} at granularity {granularity!r}; gateable layers: {sorted(kinds)}"
            )
        kinds = {n: kinds[n] for n in layers}
    groups = unit_groups(model, trace(model)) if "channel" in kinds.values() else {}
    modules = dict(model.named_modules())
    for name in [n for n, kind in kinds.items() if kind == "channel"]:
        group = groups[name]
        reason = group.blocked
        if reason is None and any(not modules[b].affine for b in group.norms):
            reason = "a BatchNorm without affine parameters follows it"
        if reason is not None:
            reason = f"its channels cannot be removed: {reason}"
            if layers is not None:
                raise GatelabError(f"layer {name!r}: {reason}")
            skipped[name] = reason
            del kinds[name]
    if not kinds:
        raise GatelabError(
            f"{type(model).__name__} has no layer that can be gated at granularity {granularity!r}"
            + (f" ({'; '.join(f'{n}: {r}' for n, r in skipped.items())})" if skipped else "")
            + "; gates go on nn.Linear (weight, neuron) and nn.Conv2d (weight, channel)"
        )
    names = list(kinds)
    known = set(_candidates(model, "weight"))
    lams = per_layer("lam", lam, names, lambda v: v >= 0, "a finite number >= 0", known)
    keeps = per_layer("keep_prob", keep_prob, names, lambda v: 0 < v < 1, "a probability in (0, 1)", known)
    est = make_estimator(estimator, gate_function, k)
    for name, kind in kinds.items():
        layer = modules[name]
        w = layer.weight
        if kind == "weight":
            gate = Gate(tuple(w.shape), est, keeps[name], 1, lams[name], name)
            parametrize.register_parametrization(layer, "weight", GateMask(gate, None))
        elif kind == "neuron":
            gate = Gate((w.shape[1],), est, keeps[name], w.shape[0], lams[name], name)
            parametrize.register_parametrization(layer, "weight", GateMask(gate, 1))
        else:
            size = w[0].numel() + (layer.bias is not None)
            gate = Gate((w.shape[0],), est, keeps[name], size, lams[name], name)
            targets = [(layer, "weight"), (layer, "bias")] + [
                (modules[b], p) for b in groups[name].norms for p in ("weight", "bias")
            ]
            for mod, pname in targets:
                if getattr(mod, pname, None) is not None:
                    parametrize.register_parametrization(mod, pname, GateMask(gate, 0))
        gate.to(w.device)
    model.gatelab_gates = GateConfig(granularity, estimator, gate_function, k, lams, keeps, skipped)
    model.register_forward_pre_hook(before_forward)
    return model


def before_forward(model: nn.Module, args) -> None:
    """The forward pre-hook that ``sparsify`` registers on the model (``export`` removes it by identity).

    It records the input shape and draws fresh gates for every training forward,
    unless ``train_step`` is steering them.
    """
    config = model.gatelab_gates
    if config.input_shape is None and args and torch.is_tensor(args[0]):
        config.input_shape = list(args[0].shape[1:])
    if model.training and not getattr(model, "_gatelab_steering", False):
        resample(model)


def gates(model: nn.Module) -> list[Gate]:
    """The model's gates, in layer order."""
    found = [m for m in model.modules() if isinstance(m, Gate)]
    if not found:
        raise GatelabError(f"{type(model).__name__} has no gates; call gatelab.gates.sparsify(model) first")
    return found


def resample(model: nn.Module) -> None:
    """Draw new uniform noise for every gate."""
    for g in gates(model):
        g.resample_()


def l0_penalty(model: nn.Module) -> torch.Tensor:
    """The expected number of open gates: the sum over gates of P(z != 0)."""
    return sum(g.prob_open().sum() for g in gates(model))


def expected_l0(model: nn.Module) -> torch.Tensor:
    """The expected number of parameters that the gates leave on."""
    return sum(g.group_size * g.prob_open().sum() for g in gates(model))


def undecided_gates(model: nn.Module, low: float = 0.1, high: float = 0.9) -> torch.Tensor:
    """How many gates are still undecided, low < P(open) < high (a tensor on the model's device, no host sync).

    Near P(open) = 1/2 the test-time rule g * 1[g >= 1/2] flips such gates by
    small moves of ``phi``, so a count well above 0 says that the error under
    that rule still swings with them.
    """
    return sum(((p > low) & (p < high)).sum() for p in (g.prob_open() for g in gates(model)))


@contextlib.contextmanager
def soft_gates(model: nn.Module):
    """Inside the block, eval mode uses every gate's expected value E[z] instead of the test-time rule."""
    model_gates = gates(model)
    for g in model_gates:
        g.soft = True
    try:
        yield model
    finally:
        for g in model_gates:
            g.soft = False


def expected_l2(model: nn.Module) -> torch.Tensor:
    """E_z ||theta * z||^2: every weight's square weighted by P(open) of the gate that switches it.

    Weights that no gate switches (a Linear's bias, ungated layers) count in
    full; the gates' own ``phi`` do not count. This is the authors' (and
    Louizos et al.'s) gated weight decay, before its factor weight_decay / 2.
    """
    gated = set()
    total = torch.zeros((), device=next(model.parameters()).device)
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        for plist in module.parametrizations.values():
            original, mask = plist.original, plist[0]
            gated.add(original)
            square = original.square()
            others = [d for d in range(square.dim()) if d != mask.dim]
            if mask.dim is not None and others:  # (an empty list would sum over every dimension)
                square = square.sum(others)
            total = total + (mask.gate.prob_open() * square).sum()
    phis = {g.phi for g in gates(model)}
    for p in model.parameters():
        if p not in gated and p not in phis:
            total = total + p.square().sum()
    return total


def regularizer(model: nn.Module, dataset_size: int, weight_decay: float = 0.0) -> torch.Tensor:
    """The papers' penalty: sum over layers of lambda / N times the layer's expected L0 norm,
    plus weight_decay / 2 times ``expected_l2`` (none by default)."""
    reg = sum(g.lam / dataset_size * g.group_size * g.prob_open().sum() for g in gates(model))
    if weight_decay:
        reg = reg + 0.5 * weight_decay * expected_l2(model)
    return reg


@contextlib.contextmanager
def _steering(model: nn.Module):
    model._gatelab_steering = True
    try:
        yield
    finally:
        model._gatelab_steering = False


def _set_antithetic(model_gates: list[Gate], value: bool) -> None:
    for g in model_gates:
        g.antithetic = value


def _same_random_numbers(device: torch.device):
    """Fork the random generators of ``device`` (and the CPU's): inside the block, draws are undone after it."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    return torch.random.fork_rng(devices=[device], device_type=device.type)


@contextlib.contextmanager
def _frozen_buffers(model: nn.Module):
    """Restore every buffer a forward pass may update (BatchNorm running statistics and counters) after the block.

    The layers still normalise with the batch's statistics, as in the main pass;
    only their running buffers stay as they were. Gates' noise is left alone.
    """
    saved = [
        (buf, buf.clone())
        for module in model.modules()
        if not isinstance(module, Gate)
        for buf in module.buffers(recurse=False)
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def train_step(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    dataset_size: int,
    criterion: Callable = F.cross_entropy,
    weight_decay: float = 0.0,
    antithetic: bool = True,
    skip_closed: bool = True,
) -> dict:
    """One optimiser step on data loss + L0 regularizer, with the estimator's gradient for the gates.

    ARM runs a second, gradient-free forward pass on the antithetic gates that
    share the same uniform draw. That pass sees the same random numbers as the
    main one (so dropout draws the same masks) and leaves the model as it was
    (BatchNorm normalises with the batch's statistics but its running buffers and
    ``num_batches_tracked`` are untouched). AR and the relaxations need one pass.
    ``weight_decay`` adds the gated expected-L2 term (see ``regularizer``).
    ``antithetic=False`` skips ARM's second pass and its gradient. That is exact only while no gate is
    undecided (``undecided_gates(model, 0, 1) == 0``, as at NPN's k = 5000): both passes then draw the same
    gates, so ARM's gradient is 0, and the step costs what ordinary training costs.
    ``skip_closed`` lets a chain model on the CPU compute only its open units (``compact_forward``: the
    same outputs and gradients, cheaper as pruning proceeds; not for straight-through gates, whose closed
    gates still learn). It waits for the gates' values, so GPUs always run the dense pass.

    Returns detached tensors on the model's device (no host synchronisation):
    ``loss``, ``data_loss``, ``regularizer`` and the main pass's ``outputs``.
    """
    if dataset_size <= 0:
        raise GatelabError(f"dataset_size must be a positive count of training examples, got {dataset_size}")
    model_gates = gates(model)
    estimator = model_gates[0].estimator
    compact = skip_closed and inputs.device.type == "cpu" and not estimator.closed_gates_learn and compactable(model)

    def forward():
        out = compact_forward(model, inputs) if compact else None
        return model(inputs) if out is None else out

    model.train()
    with _steering(model):
        before_forward(model, (inputs,))  # records the input shape where the compact pass skips the hook
        resample(model)
        f_anti = None
        if estimator.passes == 2 and antithetic:
            _set_antithetic(model_gates, True)
            try:
                with torch.no_grad(), _same_random_numbers(inputs.device), _frozen_buffers(model):
                    f_anti = criterion(forward(), targets)
            finally:
                _set_antithetic(model_gates, False)
        outputs = forward()
        data_loss = criterion(outputs, targets)
        reg = regularizer(model, dataset_size, weight_decay)
        loss = data_loss + reg
        arm_skipped = estimator.passes == 2 and not antithetic
        for g in () if arm_skipped else model_gates:
            term = estimator.surrogate(g.phi, g.u, data_loss.detach(), f_anti)
            if term is not None:
                loss = loss + term
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for g in model_gates:
            estimator.constrain_(g.phi)
    data_loss, reg = data_loss.detach(), reg.detach()
    return {"loss": data_loss + reg, "data_loss": data_loss, "regularizer": reg, "outputs": outputs.detach()}
