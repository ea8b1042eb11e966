"""Which units of which layers can be physically removed, read off the model's torch.fx graph.

A *unit group* is the output units (Linear rows or Conv2d channels) of one
producer layer together with everything they flow into: channel-wise layers
(BatchNorm, pooling, zero-preserving activations) and, at the end, the input
units of consumer layers (Linear columns, Conv2d input channels), possibly
through a flatten. Such a group can shrink as one. A path into anything else
(a residual addition, a concatenation, the model output, a sigmoid that maps
0 to 1/2, ...) blocks the group, and the reason is kept for the user.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from gatelab.errors import GatelabError

PRUNABLE = (nn.Linear, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# Layers and functions that act on each unit separately and map 0 to 0.
ZERO_PRESERVING_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Hardtanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
ZERO_PRESERVING_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.gelu,
    F.silu,
    torch.tanh,
    F.tanh,
    F.hardtanh,
    F.dropout,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
}
ZERO_PRESERVING_METHODS = {"relu", "tanh", "contiguous"}


@dataclass
class UnitGroup:
    """The output units of ``producer`` and the layers they flow into."""

    producer: str
    norms: list[str] = field(default_factory=list)
    consumers: list[tuple[str, bool]] = field(default_factory=list)  # (name, reached through a flatten)
    blocked: str | None = None


def trace(model: nn.Module) -> fx.GraphModule:
    """Trace ``model`` with torch.fx, or say clearly why that is needed and failed."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many kinds of errors on untraceable code
        raise GatelabError(
            f"channel gates and export need a model that torch.fx can trace; tracing "
            f"{type(model).__name__} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _is_flatten(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        m = modules[node.target]
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    if node.op == "call_function" and node.target is torch.flatten:
        return start == 1 and end == -1
    if node.op == "call_method" and node.target == "flatten":
        return start == 1 and end == -1
    return False


def _describe(node: fx.Node, modules: dict) -> str:
    if node.op == "call_module":
        return f"{type(modules[node.target]).__name__} {node.target!r}"
    if node.op == "output":
        return "the model output"
    if node.target in (operator.add, torch.add, operator.iadd) or node.target in ("add", "add_"):
        return "an addition (a residual connection)"
    if node.target in (torch.cat, torch.concat):
        return "a concatenation"
    name = getattr(node.target, "__name__", str(node.target))
    return f"{node.op} {name}"


def unit_groups(model: nn.Module, gm: fx.GraphModule | None = None) -> dict[str, UnitGroup]:
    """The unit group of every Linear and Conv2d of ``model``, by module name."""
    gm = gm if gm is not None else trace(model)
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    groups: dict[str, UnitGroup] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], PRUNABLE):
            continue
        group = UnitGroup(node.target)
        groups[node.target] = group
        if calls[node.target] > 1:
            group.blocked = f"{node.target!r} is called more than once"
            continue
        if isinstance(modules[node.target], nn.Conv2d) and modules[node.target].groups != 1:
            group.blocked = f"{node.target!r} is a grouped convolution"
            continue
        # Walk forward: (node, layout) with layout "channels" (N, C, ...) or "features" (N, F).
        layout0 = "channels" if isinstance(modules[node.target], nn.Conv2d) else "features"
        todo = [(user, node, layout0, False) for user in node.users]
        while todo and group.blocked is None:
            user, src, layout, flattened = todo.pop()
            module = modules.get(user.target) if user.op == "call_module" else None
            if isinstance(module, PRUNABLE) and user.args and user.args[0] is src:
                wanted = "channels" if isinstance(module, nn.Conv2d) else "features"
                if layout != wanted or calls[user.target] > 1 or (isinstance(module, nn.Conv2d) and module.groups != 1):
                    group.blocked = f"its units reach {_describe(user, modules)} in an unsupported layout"
                else:
                    group.consumers.append((user.target, flattened))
                continue
            if isinstance(module, NORMS):
                if calls[user.target] > 1:
                    group.blocked = f"{user.target!r} is called more than once"
                    continue
                group.norms.append(user.target)
            elif _is_flatten(user, modules):
                if layout != "channels":
                    group.blocked = "a flatten of features"
                    continue
                layout, flattened = "features", True
            elif not (
                isinstance(module, ZERO_PRESERVING_MODULES)
                or (user.op == "call_function" and user.target in ZERO_PRESERVING_FUNCTIONS)
                or (user.op == "call_method" and user.target in ZERO_PRESERVING_METHODS)
            ):
                group.blocked = f"its units reach {_describe(user, modules)}"
                continue
            todo.extend((nxt, user, layout, flattened) for nxt in user.users)
        if group.blocked is None and not group.consumers:
            group.blocked = "its units reach no layer that could drop them"
    return groups
