"""The gate module and the parametrization that applies it to a layer's tensors."""

from __future__ import annotations

import torch
from torch import nn

from gatelab.gates.estimators import Estimator


class Gate(nn.Module):
    """A tensor of stochastic binary gates with parameters ``phi``.

    In training mode it returns the gates drawn from the current uniform noise
    ``u`` (redrawn by ``resample_``); in eval mode the deterministic test-time
    gates, or the soft (expected) gates while ``soft`` is set (see
    ``gatelab.gates.soft_gates``). ``group_size`` is how many parameters each gate switches off, so the
    expected L0 norm of the layer is ``sum(group_size * P(open))``. ``phi``
    starts at N(init_phi(keep_prob), init_std^2); init_std None is the
    estimator's (0.01 / k for sigmoid(k phi), as in the authors' code).

    ``u`` holds one uniform number per gate: every example of a minibatch sees
    the same gates (the authors' ``local_rep``), since they multiply the weights.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        estimator: Estimator,
        keep_prob: float,
        group_size: int,
        lam: float,
        layer: str,
        init_std: float | None = None,
    ):
        super().__init__()
        init = estimator.init_phi(keep_prob)
        std = estimator.init_std() if init_std is None else init_std
        self.phi = nn.Parameter(torch.full(shape, init) + std * torch.randn(shape))
        self.register_buffer("u", torch.rand(shape), persistent=False)
        self.estimator = estimator
        self.group_size = group_size
        self.lam = lam
        self.layer = layer
        self.antithetic = False
        self.soft = False

    def resample_(self) -> None:
        self.u.uniform_()

    def forward(self) -> torch.Tensor:
        if self.training:
            return self.estimator.sample(self.phi, self.u, self.antithetic)
        if self.soft:
            return self.estimator.expected(self.phi)
        return self.estimator.deterministic(self.phi)

    def prob_open(self) -> torch.Tensor:
        return self.estimator.prob_open(self.phi)

    def extra_repr(self) -> str:
        return f"{self.layer}: {tuple(self.phi.shape)} gates, estimator={self.estimator.name}, lam={self.lam}"


class GateMask(nn.Module):
    """Parametrization ``t -> t * z``, with the gates broadcast along dimension ``dim`` (all dims if None)."""

    def __init__(self, gate: Gate, dim: int | None):
        super().__init__()
        self.gate = gate
        self.dim = dim

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        z = self.gate()
        if self.dim is not None:
            shape = [1] * tensor.dim()
            shape[self.dim] = -1
            z = z.view(shape)
        return tensor * z
