"""An exponential moving average of a model's parameters, evaluated in place of the last weights.

The L0-ARM and hard concrete authors keep such an average (decay 0.999 on
MNIST) of every parameter, gates included. Theirs starts from the initial
weights and divides by 1 - decay^t; this one starts from zero, so that the
same division makes it an exact weighted average of the weights seen:

    average_t = (1 - decay) * sum_i decay^(t - i) * theta_i / (1 - decay^t)

(after many steps the two agree). ``decay = 0`` is the last weights.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from gatelab.errors import GatelabError


class WeightAverage:
    """The moving average of ``model``'s parameters; ``update()`` after each optimiser step."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0 <= decay < 1:
            raise GatelabError(f"weight-average decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.params = list(model.parameters())
        self.sums = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current parameters into the average (no host synchronisation)."""
        torch._foreach_lerp_(self.sums, [p.detach() for p in self.params], 1.0 - self.decay)
        self.steps += 1

    def averaged(self) -> list[torch.Tensor]:
        """The average of each parameter (the parameters themselves before the first update)."""
        if self.steps == 0:
            return [p.detach().clone() for p in self.params]
        scale = 1.0 / (1.0 - self.decay**self.steps)
        return [s * scale for s in self.sums]

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Replace the model's parameters by their average, for good."""
        for p, a in zip(self.params, self.averaged()):
            p.copy_(a)

    @contextlib.contextmanager
    def applied(self):
        """Inside the block the model holds the averaged parameters; after it, its own again."""
        saved = [p.detach().clone() for p in self.params]
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "steps": self.steps, "sums": [s.detach().cpu() for s in self.sums]}

    def load_state_dict(self, state: dict) -> None:
        sums = state["sums"]
        if state["decay"] != self.decay or len(sums) != len(self.sums):
            raise ValueError(f"weight average of decay {state['decay']} over {len(sums)} tensors does not fit")
        for mine, theirs in zip(self.sums, sums):
            if mine.shape != theirs.shape:
                raise ValueError(f"weight-average tensor of shape {tuple(theirs.shape)}, expected {tuple(mine.shape)}")
            mine.copy_(theirs)
        self.steps = int(state["steps"])
