"""Stochastic binary gates and the estimators of their gradient.

A gate z in {0, 1} (or [0, 1] for hard concrete) multiplies a unit. Its
parameter ``phi`` sets the probability that it is open. The estimators differ in
how they get the gradient of E_z[loss] with respect to ``phi``:

* ``arm``  -- Augment-REINFORCE-Merge (L0-ARM): two forward passes on antithetic
  gates 1[u > 1 - g] and 1[u < g] that share one uniform draw u; unbiased and
  low-variance.
* ``ar``   -- Augment-REINFORCE: one pass, unbiased, higher variance.
* ``hard_concrete`` -- Louizos et al.'s stretched, clipped concrete relaxation,
  differentiated by reparametrization (biased towards the relaxation).
* ``straight_through`` -- Bernoulli forward, identity backward; a simple biased
  reference.

ARM and AR produce their gradient through a surrogate term
``coef.detach() * logit(g(phi))`` whose derivative is the estimate, so any gate
function with a logit works (the chain rule is done by autograd).
"""

from __future__ import annotations

import math

import torch

from gatelab.errors import GatelabError, check_choice

# Louizos et al.'s hard concrete constants.
HC_BETA, HC_GAMMA, HC_ZETA = 2.0 / 3.0, -0.1, 1.1
HC_LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))
_EPS = 1e-6


class GateFunction:
    """g(phi): the probability that a Bernoulli gate is open."""

    name = ""

    def __init__(self, k: float = 7.0):
        if not (k >= 0 and math.isfinite(k)):
            raise GatelabError(f"gate slope k must be a finite number >= 0 (0: dropout), got {k}")
        self.k = float(k)

    def prob(self, phi: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logit(self, phi: torch.Tensor) -> torch.Tensor:
        p = self.prob(phi).clamp(_EPS, 1 - _EPS)
        return torch.log(p) - torch.log1p(-p)

    def init_phi(self, keep_prob: float) -> float:
        raise NotImplementedError

    def init_std(self) -> float:
        """The spread of the initial ``phi``: 0.01 / k, so that g(phi) spreads alike for every k (the authors')."""
        return 1e-2 / self.k if self.k > 0 else 1e-2


class ScaledSigmoid(GateFunction):
    """g(phi) = sigmoid(k * phi); k = 1 is the plain sigmoid, the paper uses k = 7."""

    name = "scaled_sigmoid"

    def prob(self, phi):
        return torch.sigmoid(self.k * phi)

    def logit(self, phi):
        return self.k * phi

    def init_phi(self, keep_prob):
        logit = math.log(keep_prob / (1 - keep_prob))
        return logit / self.k if self.k > 0 else logit


class PlainSigmoid(ScaledSigmoid):
    """g(phi) = sigmoid(phi)."""

    name = "sigmoid"

    def __init__(self, k: float = 7.0):
        super().__init__(1.0)


class HardSigmoid(GateFunction):
    """g(phi) = clip(k * phi / 7 + 1/2, 0, 1): piecewise linear, exactly 0 or 1 outside a band."""

    name = "hard_sigmoid"

    def prob(self, phi):
        return (self.k * phi / 7.0 + 0.5).clamp(0.0, 1.0)

    def init_phi(self, keep_prob):
        return (keep_prob - 0.5) * 7.0 / self.k if self.k > 0 else keep_prob - 0.5


GATE_FUNCTIONS = {f.name: f for f in (ScaledSigmoid, PlainSigmoid, HardSigmoid)}


class Estimator:
    """How a gate samples, what it uses at test time, and how its gradient is estimated."""

    name = ""
    passes = 1  # forward passes per training step
    closed_gates_learn = False  # whether a gate at 0 still gets a gradient through its unit's outputs

    def __init__(self, gate_function: str = "scaled_sigmoid", k: float = 7.0):
        check_choice("gate function", gate_function, GATE_FUNCTIONS)
        self.g = GATE_FUNCTIONS[gate_function](k)

    def prob_open(self, phi):
        """P(z != 0), the quantity the L0 penalty sums."""
        return self.g.prob(phi)

    def init_phi(self, keep_prob: float) -> float:
        return self.g.init_phi(keep_prob)

    def init_std(self) -> float:
        """Standard deviation of the Gaussian noise added to the initial ``phi``."""
        return self.g.init_std()

    def sample(self, phi, u, antithetic: bool = False):
        """The gate values for uniform noise ``u``: 1[u < g], or 1[u > 1 - g] when antithetic."""
        p = self.g.prob(phi).detach()
        return (u > 1 - p).to(phi.dtype) if antithetic else (u < p).to(phi.dtype)

    def deterministic(self, phi):
        """The paper's test-time gate: g(phi) where g(phi) >= 1/2, else 0."""
        p = self.g.prob(phi)
        return torch.where(p >= 0.5, p, torch.zeros_like(p))

    def expected(self, phi):
        """The soft gate E[z] = g(phi): what the network sees on average over draws, undecided gates included."""
        return self.g.prob(phi)

    def surrogate(self, phi, u, f_main, f_anti):
        """A term whose gradient in ``phi`` is the estimate; None when autograd already gives it."""
        return None

    def constrain_(self, phi) -> None:
        """Keep ``phi`` in its valid range after an optimiser step."""


class ARM(Estimator):
    """Augment-REINFORCE-Merge: grad = (f(1[u > 1-g]) - f(1[u < g])) (u - 1/2) dlogit(g)/dphi."""

    name = "arm"
    passes = 2

    def surrogate(self, phi, u, f_main, f_anti):
        coef = (f_anti - f_main) * (u - 0.5)
        return (coef.detach() * self.g.logit(phi)).sum()


class AR(Estimator):
    """Augment-REINFORCE: grad = f(1[u < g]) (1 - 2u) dlogit(g)/dphi, one forward pass."""

    name = "ar"

    def surrogate(self, phi, u, f_main, f_anti):
        coef = f_main * (1 - 2 * u)
        return (coef.detach() * self.g.logit(phi)).sum()


class StraightThrough(Estimator):
    """Bernoulli sample forward, d z / d g = 1 backward (biased; a reference)."""

    name = "straight_through"
    closed_gates_learn = True

    def sample(self, phi, u, antithetic=False):
        p = self.g.prob(phi)
        hard = (u < p.detach()).to(phi.dtype)
        return hard + p - p.detach()


class HardConcrete(Estimator):
    """Louizos et al.: z = clip(sigmoid((log u - log(1-u) + log_alpha)/beta) (zeta-gamma) + gamma, 0, 1).

    ``phi`` is log_alpha. z is exactly 0 or 1 with positive probability and
    differentiable in between, so autograd gives the (relaxed) gradient.
    """

    name = "hard_concrete"

    def __init__(self, gate_function: str = "scaled_sigmoid", k: float = 7.0):
        self.g = None  # hard concrete has its own distribution

    def prob_open(self, phi):
        return torch.sigmoid(phi - HC_BETA * math.log(-HC_GAMMA / HC_ZETA))

    def init_phi(self, keep_prob):
        return math.log(keep_prob / (1 - keep_prob))

    def init_std(self):
        return 1e-2  # Louizos et al.'s code: log_alpha ~ N(logit(1 - droprate), 0.01)

    def _stretch(self, s):
        return (s * (HC_ZETA - HC_GAMMA) + HC_GAMMA).clamp(0.0, 1.0)

    def sample(self, phi, u, antithetic=False):
        u = u.clamp(_EPS, 1 - _EPS)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + phi) / HC_BETA)
        return self._stretch(s)

    def deterministic(self, phi):
        return self._stretch(torch.sigmoid(phi))

    def expected(self, phi):
        """Louizos et al.'s test-time estimate of E[z] (the deterministic gate): its mean has no closed form."""
        return self.deterministic(phi)

    def constrain_(self, phi):
        phi.data.clamp_(*HC_LOG_ALPHA_RANGE)


ESTIMATORS = {e.name: e for e in (ARM, AR, HardConcrete, StraightThrough)}


def make_estimator(name: str, gate_function: str = "scaled_sigmoid", k: float = 7.0) -> Estimator:
    """An estimator by name: ``arm``, ``ar``, ``hard_concrete`` or ``straight_through``."""
    check_choice("estimator", name, ESTIMATORS)
    return ESTIMATORS[name](gate_function, k)
