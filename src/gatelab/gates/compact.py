"""Training passes that compute only the units the gates leave open.

Every example of a minibatch sees the same gates, so a closed neuron or channel
adds exactly zero to the outputs and its weights get no gradient from the data.
``compact_forward`` slices each layer's weights down to the open units before
the convolution or matrix product: the same outputs and gradients as the dense
pass, at a fraction of its cost once pruning has begun (LeNet-5's two
convolutions shrink with the product of their open channels).

It runs chain models: an ``nn.Sequential`` of ``Conv2d``, ``Linear`` and
parameter-free layers that act on each unit or channel alone (activations,
pooling, Flatten). Anything else (BatchNorm, Dropout, weight-level gates, a residual
model) runs its own forward; ``compactable`` says which applies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from gatelab.gates.gate import Gate, GateMask

# Layers that map each unit on its own: a Linear's output unit that the next Linear's gate closes may be
# skipped through them.
_PER_UNIT = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity)
# Parameter-free layers that act on each channel alone. ``sparsify`` gates a channel only where every layer
# it reaches keeps a zero channel at zero, so a closed channel may be left out of them.
_PER_CHANNEL = _PER_UNIT + (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)


def _mask(module: nn.Module, name: str) -> GateMask | None:
    """The GateMask on ``module.name``, or None where no gate switches it."""
    if not parametrize.is_parametrized(module, name):
        return None
    return module.parametrizations[name][0]


def _raw(module: nn.Module, name: str) -> torch.Tensor | None:
    """``module.name`` before its gate: the parameter that the optimiser updates."""
    if parametrize.is_parametrized(module, name):
        return module.parametrizations[name].original
    return getattr(module, name)


def _fits(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        mask = _mask(layer, "weight")
        return (mask is None or mask.dim == 1) and not parametrize.is_parametrized(layer, "bias")
    if isinstance(layer, nn.Conv2d):
        mask = _mask(layer, "weight")
        return layer.groups == 1 and layer.padding_mode == "zeros" and (mask is None or mask.dim == 0)
    if isinstance(layer, nn.Flatten):
        return layer.start_dim == 1 and layer.end_dim == -1
    return type(layer) in _PER_CHANNEL


def compactable(model: nn.Module) -> bool:
    """Whether ``compact_forward`` can run ``model``: a Sequential of convolutions, Linears and per-channel layers."""
    return isinstance(model, nn.Sequential) and all(_fits(layer) for layer in model)


def _next_linear_gate(layers: list[nn.Module], i: int) -> GateMask | None:
    """The input gate of the Linear that layer i feeds through per-unit layers only, if there is one."""
    for layer in layers[i + 1 :]:
        if isinstance(layer, nn.Linear):
            return _mask(layer, "weight")
        if type(layer) not in _PER_UNIT:
            return None
    return None


def _open(z: torch.Tensor) -> torch.Tensor:
    return z.nonzero().squeeze(1)


def compact_forward(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor | None:
    """``model(x)`` in training mode, computed on the open units only; None if some gated layer has none open.

    The gates are drawn once per pass from their current noise (``Gate.forward``),
    as the dense pass draws them. Forward hooks (the model's, its layers') are not called.
    """
    layers = list(model)
    values: dict[Gate, torch.Tensor] = {}
    for layer in layers:
        mask = _mask(layer, "weight")
        if mask is not None and mask.gate not in values:
            values[mask.gate] = mask.gate()
    if any(not bool(z.any()) for z in values.values()):
        return None
    idx = None  # which units of dimension 1 x holds (None: all of them)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            weight, bias = _raw(layer, "weight"), _raw(layer, "bias")
            if idx is not None:
                weight = weight[:, idx]
            mask = _mask(layer, "weight")
            idx = None
            if mask is not None:
                z = values[mask.gate]
                idx = _open(z)
                weight = weight[idx] * z[idx].view(-1, 1, 1, 1)
                bias = None if bias is None else bias[idx] * z[idx]
            x = F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation)
        elif isinstance(layer, nn.Linear):
            weight, bias = _raw(layer, "weight"), layer.bias
            mask = _mask(layer, "weight")
            if mask is not None:
                z = values[mask.gate]
                if idx is None:
                    idx = _open(z)
                    x = x[:, idx]
                else:
                    keep = _open(z[idx])
                    x, idx = x[:, keep], idx[keep]
                weight = weight[:, idx] * z[idx]
            elif idx is not None:
                weight = weight[:, idx]
            following = _next_linear_gate(layers, i)
            idx = None if following is None else _open(values[following.gate])
            if idx is not None:
                weight = weight[idx]
                bias = None if bias is None else bias[idx]
            x = F.linear(x, weight, bias)
        else:
            if isinstance(layer, nn.Flatten) and x.dim() > 2 and idx is not None:
                spatial = x[0, 0].numel()
                idx = (idx[:, None] * spatial + torch.arange(spatial, device=idx.device)).reshape(-1)
            x = layer(x)
    return x  # every unit: sparsify gates no channel that reaches the output, and the last Linear looks ahead to none
