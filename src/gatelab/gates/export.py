"""From a gated model to a smaller plain one, and how big each is."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from gatelab.errors import GatelabError
from gatelab.gates.api import before_forward, gates
from gatelab.gates.graph import PRUNABLE, trace, unit_groups


def _strip(model: nn.Module, leave_gated: bool) -> nn.Module:
    """A plain copy of ``model``: gates multiplied in (``leave_gated``) or dropped (all open)."""
    gates(model)  # raises if the model has none
    plain = copy.deepcopy(model).eval()
    for module in list(plain.modules()):
        if parametrize.is_parametrized(module):
            # deepcopy shares the Parametrized* class with the original, and removing a
            # parametrization edits that class: give the copy a class of its own first.
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=leave_gated)
    for key, hook in list(plain._forward_pre_hooks.items()):
        if hook is before_forward:
            del plain._forward_pre_hooks[key]
    del plain.gatelab_gates
    return plain


def bake(model: nn.Module) -> nn.Module:
    """A plain copy of ``model`` with its deterministic test-time gates multiplied into the weights."""
    return _strip(model, leave_gated=True)


class SelectUnits(nn.Module):
    """Keep only the listed units (features or channels) of the input, along ``dim``."""

    def __init__(self, index: torch.Tensor, dim: int):
        super().__init__()
        self.register_buffer("index", index.clone())
        self.dim = dim

    def forward(self, x):
        return x.index_select(self.dim, self.index)

    def extra_repr(self):
        return f"{self.index.numel()} units along dim {self.dim}"


def _dead_outputs(layer: nn.Module) -> torch.Tensor:
    """Output units whose value is exactly zero for every input."""
    zero = (layer.weight == 0).flatten(1).all(1)
    if layer.bias is not None:
        zero &= layer.bias == 0
    return zero


def _used_inputs(layer: nn.Module) -> torch.Tensor:
    """Input units that some weight reads."""
    return (layer.weight != 0).transpose(0, 1).flatten(1).any(1)


def _norm_keeps_zero(norm: nn.Module) -> torch.Tensor:
    """Channels that this (eval-mode) BatchNorm maps from 0 to 0."""
    shift = norm.bias.detach() if norm.bias is not None else torch.zeros(norm.num_features)
    if norm.running_mean is not None:
        scale = norm.weight.detach() if norm.weight is not None else torch.ones(norm.num_features)
        shift = shift - scale * norm.running_mean / torch.sqrt(norm.running_var + norm.eps)
    return shift == 0


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad)


def _slice_outputs(layer: nn.Module, idx: torch.Tensor) -> None:
    layer.weight = _param(layer.weight[idx])
    if layer.bias is not None:
        layer.bias = _param(layer.bias[idx])
    if isinstance(layer, nn.Linear):
        layer.out_features = idx.numel()
    else:
        layer.out_channels = idx.numel()


def _slice_inputs(layer: nn.Module, idx: torch.Tensor) -> None:
    layer.weight = _param(layer.weight[:, idx])
    if isinstance(layer, nn.Linear):
        layer.in_features = idx.numel()
    else:
        layer.in_channels = idx.numel()


def _slice_norm(norm: nn.Module, idx: torch.Tensor) -> None:
    for name in ("weight", "bias"):
        if getattr(norm, name) is not None:
            setattr(norm, name, _param(getattr(norm, name)[idx]))
    for name in ("running_mean", "running_var"):
        if getattr(norm, name) is not None:
            setattr(norm, name, getattr(norm, name)[idx].clone())
    norm.num_features = idx.numel()


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


@torch.no_grad()
def export(model: nn.Module) -> nn.Module:
    """A plain ``nn.Module`` with pruned neurons and channels physically removed.

    Its outputs equal the gated model's deterministic (eval-mode) outputs. A
    producer's unit is removed with the consumers' matching input units when it
    is exactly zero where they read it, or when no consumer reads it. Layers
    whose inputs come from the model input or a path that cannot shrink (a
    residual sum) keep their full input but select the units they use first.
    """
    baked = bake(model)
    modules = dict(baked.named_modules())
    handled: set[str] = set()
    for name, group in unit_groups(baked, trace(baked)).items():
        if group.blocked is not None:
            continue
        producer = modules[name]
        n_out = producer.weight.shape[0]
        zero = _dead_outputs(producer)
        for norm in group.norms:
            zero &= _norm_keeps_zero(modules[norm])
        used = torch.zeros(n_out, dtype=torch.bool)
        spans = {}
        for cname, flattened in group.consumers:
            reads = _used_inputs(modules[cname])
            span = reads.numel() // n_out if flattened else 1
            if reads.numel() != n_out * span:
                raise GatelabError(
                    f"{cname!r} reads {reads.numel()} units, not a multiple of the {n_out} units of {name!r}"
                )
            spans[cname] = span
            used |= reads.view(n_out, span).any(1)
        keep = ~zero & used
        if keep.all():
            continue
        if not keep.any():
            keep[0] = True  # a layer keeps one (silent) unit so that shapes stay valid
        idx = keep.nonzero().squeeze(1)
        _slice_outputs(producer, idx)
        for norm in group.norms:
            _slice_norm(modules[norm], idx)
        for cname, span in spans.items():
            cols = (idx[:, None] * span + torch.arange(span)).flatten()
            _slice_inputs(modules[cname], cols)
            handled.add(cname)
    for name, layer in modules.items():
        if isinstance(layer, PRUNABLE) and name not in handled and name:
            reads = _used_inputs(layer)
            if not reads.all():
                idx = reads.nonzero().squeeze(1) if reads.any() else torch.zeros(1, dtype=torch.long)
                _slice_inputs(layer, idx)
                _replace(baked, name, nn.Sequential(SelectUnits(idx, -1 if isinstance(layer, nn.Linear) else 1), layer))
    return baked


@dataclass
class LayerSummary:
    layer: str
    gates: str
    kept: int
    total: int


@dataclass
class Summary:
    """Gates kept per layer, and parameters and FLOPs (multiply-adds) dense vs kept."""

    layers: list[LayerSummary]
    skipped: dict
    params_dense: int
    params_kept: int
    flops_dense: int
    flops_kept: int

    @property
    def architecture(self) -> str:
        """Kept gates per layer joined by '-', as the papers write a pruned architecture."""
        return "-".join(str(r.kept) for r in self.layers)

    def to_dict(self) -> dict:
        return {
            "architecture": self.architecture,
            "layers": [vars(r) for r in self.layers],
            "skipped": self.skipped,
            "params_dense": self.params_dense,
            "params_kept": self.params_kept,
            "flops_dense": self.flops_dense,
            "flops_kept": self.flops_kept,
        }

    def __str__(self) -> str:
        width = max([len(r.layer) for r in self.layers] + [5])
        lines = [f"{'layer':{width}s}  {'gates':8s} {'kept':>7s} {'total':>7s}  kept%"]
        for r in self.layers:
            lines.append(f"{r.layer:{width}s}  {r.gates:8s} {r.kept:7d} {r.total:7d}  {100 * r.kept / r.total:5.1f}")
        for name, why in self.skipped.items():
            lines.append(f"{name:{width}s}  not gated: {why}")
        lines.append(f"architecture {self.architecture}")
        lines.append(
            f"parameters   {self.params_kept:,} of {self.params_dense:,} "
            f"({100 * self.params_kept / max(self.params_dense, 1):.2f}%)"
        )
        lines.append(
            f"FLOPs        {self.flops_kept:,} of {self.flops_dense:,} "
            f"({100 * self.flops_kept / max(self.flops_dense, 1):.2f}%) multiply-adds per example"
        )
        return "\n".join(lines)


@torch.no_grad()
def count(model: nn.Module, input_shape) -> tuple[int, int]:
    """Non-zero parameters, and multiply-adds of Linear and Conv2d layers on one example."""
    params = sum(int((p != 0).sum()) for p in model.parameters())
    flops = 0

    def hook(layer, inputs, output):
        nonlocal flops
        positions = output[0, 0].numel() if isinstance(layer, nn.Conv2d) else 1
        flops += int((layer.weight != 0).sum()) * positions
        if layer.bias is not None:
            flops += int((layer.bias != 0).sum()) * positions

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, PRUNABLE)]
    try:
        was_training = model.training
        model.eval()(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return params, flops


def summary(model: nn.Module, input_shape=None) -> Summary:
    """Kept/total gates per layer, and the parameters and FLOPs of the exported vs the dense model.

    ``input_shape`` is one example's shape; by default the one the model saw first.
    """
    config = model.gatelab_gates if hasattr(model, "gatelab_gates") else None
    model_gates = gates(model)
    shape = input_shape or (config.input_shape if config else None)
    if shape is None:
        raise GatelabError("summary needs input_shape (one example's shape) or one forward pass through the model")
    rows = []
    with torch.no_grad():
        for g in model_gates:
            z = g.estimator.deterministic(g.phi)
            kind = "weights" if g.group_size == 1 else "units"
            rows.append(LayerSummary(g.layer, kind, int((z != 0).sum()), z.numel()))
    params_dense, flops_dense = count(_strip(model, leave_gated=False), shape)
    params_kept, flops_kept = count(export(model), shape)
    return Summary(rows, dict(config.skipped), params_dense, params_kept, flops_dense, flops_kept)
