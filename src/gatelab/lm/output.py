"""Output layers of a language model behind one interface: full softmax, BlackOut, NCE, importance sampling.

Every layer owns the output word matrix ``weight`` (V x H, no bias, as in the
BlackOut paper) and offers

- ``forward(hidden, targets)`` -> (summed training loss, number of counted targets),
  where ``hidden`` is (T, B, H) and ``targets`` (T, B) with ``IGNORE`` for padding;
  both are 0-dim tensors on the layer's device, so a step never waits for the host;
- ``nll(hidden, targets)``: the exact full-softmax negative log-likelihood of each
  target, used for every evaluation whatever the training loss was;
- ``log_probs(hidden)``: the exact log-distribution over the whole vocabulary.

The sampled layers draw K words per time step from q(w) ∝ count(w)^alpha, shared by
every stream of the batch at that step (as in the paper and the authors' code), and
read only the rows of ``weight`` for the targets and the samples through a sparse
embedding lookup, so the gradient of ``weight`` is a sparse tensor with those rows.

Details settled from the authors' code (IntelLabs/rnnlm): samples are drawn with
replacement, K per time step, shared by the batch; a repeated sample counts once per
draw; for BlackOut and IS a sample equal to an example's own target is left out of
that example's normaliser and negatives (NCE keeps it, as its derivation requires);
NCE uses a fixed normaliser Z (log Z = 0 by default, as there). Not copied: that code
always puts its out-of-vocabulary id among the samples, which has no basis in the paper.

The training losses as functions of scores are public (``blackout_loss``,
``nce_loss``, ``sampled_softmax_loss``) so they can be checked against closed forms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gatelab.errors import GatelabError, check_choice
from gatelab.lm.corpus import IGNORE
from gatelab.lm.sampler import UnigramSampler

LOSSES = ("softmax", "blackout", "nce", "is")


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0 (x is a log-probability that is never 1 here: the target shares the mass)."""
    return torch.log1p(-torch.exp(x).clamp(max=1.0 - 1e-7))


def blackout_loss(
    s_target: torch.Tensor,
    s_samples: torch.Tensor,
    logq_target: torch.Tensor,
    logq_samples: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """BlackOut's discriminative loss per example (to minimise).

    With weights w = 1/q, the weighted softmax over the target i and the samples
    S_K is p(k) = w_k exp(s_k) / (w_i exp(s_i) + sum_{j in S_K} w_j exp(s_j)), and
    the loss is -(log p(i) + sum_{j in S_K} log(1 - p(j))).

    Shapes: ``s_target`` (..., ), ``s_samples`` (..., K), ``logq_*`` broadcastable
    to them. ``valid`` (..., K) marks the samples that take part: a sample equal to
    the target is left out of both the normaliser and the sum (as in the authors'
    code); other repeated samples count once per draw.
    """
    a_t = s_target - logq_target
    a_s = s_samples - logq_samples
    if valid is not None:
        a_s = a_s.masked_fill(~valid, float("-inf"))
    log_z = torch.logsumexp(torch.cat([a_t.unsqueeze(-1), a_s], dim=-1), dim=-1)
    logp_t = a_t - log_z
    log1m = _log1mexp(a_s - log_z.unsqueeze(-1))
    if valid is not None:
        log1m = log1m.masked_fill(~valid, 0.0)
    return -(logp_t + log1m.sum(-1))


def sampled_softmax_loss(
    s_target: torch.Tensor,
    s_samples: torch.Tensor,
    logq_target: torch.Tensor,
    logq_samples: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Importance sampling (sampled softmax, Jean et al. 2015): -log p(i) of the same weighted softmax.

    It is BlackOut's first term alone: the correction -log q turns the sampled
    softmax into a self-normalised importance-sampling estimate of the full one.
    """
    a_t = s_target - logq_target
    a_s = s_samples - logq_samples
    if valid is not None:
        a_s = a_s.masked_fill(~valid, float("-inf"))
    log_z = torch.logsumexp(torch.cat([a_t.unsqueeze(-1), a_s], dim=-1), dim=-1)
    return log_z - a_t


def nce_loss(
    s_target: torch.Tensor,
    s_samples: torch.Tensor,
    logq_target: torch.Tensor,
    logq_samples: torch.Tensor,
    k: int,
    log_z: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Noise-contrastive estimation (Gutmann & Hyvärinen; Mnih & Teh) per example.

    The model's unnormalised probability is u(w) = exp(s_w - log_z); the loss is
    -(log sigma(log u(i) - log(K q(i))) + sum_j log sigma(-(log u(j) - log(K q(j))))).
    Noise samples equal to the target stay in, as NCE's derivation requires.
    """
    log_k = math.log(k)
    d_t = s_target - log_z - logq_target - log_k
    d_s = s_samples - log_z - logq_samples - log_k
    return -(F.logsigmoid(d_t) + F.logsigmoid(-d_s).sum(-1))


class OutputLayer(nn.Module):
    """The common part: the output matrix, exact evaluation, and the training-loss interface."""

    name = "base"
    sampled = False

    def __init__(self, vocab_size: int, hidden_size: int, init_range: float = 0.08):
        super().__init__()
        if vocab_size < 2:
            raise GatelabError(f"the vocabulary must have at least 2 words, got {vocab_size}")
        if hidden_size < 1:
            raise GatelabError(f"hidden_size must be at least 1, got {hidden_size}")
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size).uniform_(-init_range, init_range))

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Exact log p(w | h) over the whole vocabulary, shape (..., V)."""
        return torch.log_softmax(hidden @ self.weight.t(), dim=-1)

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor, chunk_elems: int = 1 << 24) -> torch.Tensor:
        """Exact full-softmax -log p(target | h) per position (0 where the target is ``IGNORE``).

        Computed in row chunks of at most ``chunk_elems`` logits, so a 1M-word
        vocabulary is evaluated without a (N x V) matrix in memory.
        """
        h = hidden.reshape(-1, hidden.shape[-1])
        y = targets.reshape(-1)
        out = torch.zeros(y.shape, dtype=h.dtype, device=h.device)
        rows = max(1, chunk_elems // self.vocab_size)
        for start in range(0, h.shape[0], rows):
            hc, yc = h[start : start + rows], y[start : start + rows]
            logits = hc @ self.weight.t()
            keep = yc != IGNORE
            picked = logits.gather(1, yc.clamp(min=0).unsqueeze(1)).squeeze(1)
            out[start : start + rows] = torch.where(keep, torch.logsumexp(logits, 1) - picked, 0.0)
        return out.reshape(targets.shape)

    def forward(self, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class FullSoftmax(OutputLayer):
    """The exact softmax: every step reads and updates all V rows (dense gradient)."""

    name = "softmax"

    def forward(self, hidden, targets):
        logits = hidden.reshape(-1, self.hidden_size) @ self.weight.t()
        y = targets.reshape(-1)
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="sum")
        return loss, (y != IGNORE).sum()


class SampledOutput(OutputLayer):
    """Shared machinery of the sampled layers: the proposal, the draws, the sparse row lookups."""

    sampled = True

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        counts,
        samples: int = 100,
        alpha: float = 0.4,
        seed: int = 0,
        init_range: float = 0.08,
    ):
        super().__init__(vocab_size, hidden_size, init_range)
        counts = torch.as_tensor(counts, dtype=torch.float64)
        if counts.numel() != vocab_size:
            raise GatelabError(f"{counts.numel()} word counts for a vocabulary of {vocab_size}")
        if not 1 <= int(samples) <= vocab_size:
            raise GatelabError(
                f"the number of samples K must be between 1 and the vocabulary size {vocab_size}, got {samples}"
            )
        self.k = int(samples)
        self.sampler = UnigramSampler(counts, alpha)
        self.register_buffer("log_q", self.sampler.log_q.clone(), persistent=False)
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def alpha(self) -> float:
        return self.sampler.alpha

    def draw(self, steps: int) -> torch.Tensor:
        """K proposal samples for each of ``steps`` time steps, shape (steps, K)."""
        return self.sampler.sample((steps, self.k), self.generator).to(self.weight.device)

    def scores(self, hidden, targets, samples=None):
        """Target scores (T, B), sample scores (T, B, K), their log q, and the draws (T, K).

        Rows are read with a sparse embedding lookup: the backward pass produces a
        sparse gradient holding only the target and sample rows.
        """
        if samples is None:
            samples = self.draw(hidden.shape[0])
        y = targets.clamp(min=0)
        # read each touched row once; the gradient of ``weight`` is sparse over these rows only
        uniq, inv = torch.unique(torch.cat([y.reshape(-1), samples.reshape(-1)]), return_inverse=True)
        rows = F.embedding(uniq, self.weight, sparse=True)  # (U, H)
        w_t = rows[inv[: y.numel()]].view(*y.shape, -1)  # (T, B, H)
        w_s = rows[inv[y.numel() :]].view(*samples.shape, -1)  # (T, K, H)
        s_t = (hidden * w_t).sum(-1)  # (T, B)
        s_s = torch.bmm(hidden, w_s.transpose(1, 2))  # (T, B, K)
        return s_t, s_s, self.log_q[y], self.log_q[samples].unsqueeze(1), samples

    def per_example(self, s_t, s_s, lq_t, lq_s, samples, targets) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, hidden, targets, samples=None):
        s_t, s_s, lq_t, lq_s, samples = self.scores(hidden, targets, samples)
        loss = self.per_example(s_t, s_s, lq_t, lq_s, samples, targets)
        keep = targets != IGNORE
        return torch.where(keep, loss, 0.0).sum(), keep.sum()


class BlackOut(SampledOutput):
    """BlackOut (Ji et al., ICLR 2016): weighted softmax over target + K samples, discriminative loss."""

    name = "blackout"

    def per_example(self, s_t, s_s, lq_t, lq_s, samples, targets):
        valid = samples.unsqueeze(1) != targets.unsqueeze(-1)  # (T, B, K)
        return blackout_loss(s_t, s_s, lq_t, lq_s, valid)


class ImportanceSampling(SampledOutput):
    """Importance sampling / sampled softmax with the same proposal and shared samples."""

    name = "is"

    def per_example(self, s_t, s_s, lq_t, lq_s, samples, targets):
        valid = samples.unsqueeze(1) != targets.unsqueeze(-1)
        return sampled_softmax_loss(s_t, s_s, lq_t, lq_s, valid)


class NCE(SampledOutput):
    """Noise-contrastive estimation with the same proposal as noise and shared samples.

    ``log_z`` is the normaliser: fixed (the authors' code uses log Z = 0), or, with
    ``learn_log_z``, a scalar parameter that starts there and is trained with the
    rest; a fixed log Z far from the model's true one starves NCE of signal.
    """

    name = "nce"

    def __init__(self, *args, log_z: float = 0.0, learn_log_z: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_z = nn.Parameter(torch.tensor(float(log_z))) if learn_log_z else float(log_z)

    def per_example(self, s_t, s_s, lq_t, lq_s, samples, targets):
        return nce_loss(s_t, s_s, lq_t, lq_s, self.k, self.log_z)


def make_output(
    loss: str,
    vocab_size: int,
    hidden_size: int,
    counts=None,
    samples: int = 100,
    alpha: float = 0.4,
    seed: int = 0,
    init_range: float = 0.08,
    nce_log_z: float = 0.0,
    nce_learn_z: bool = False,
) -> OutputLayer:
    """Build the output layer named ``loss`` (softmax, blackout, nce or is)."""
    check_choice("loss", loss, LOSSES)
    if loss == "softmax":
        return FullSoftmax(vocab_size, hidden_size, init_range)
    if counts is None:
        raise GatelabError(f"the {loss} output layer needs the training word counts for its proposal")
    cls = {"blackout": BlackOut, "is": ImportanceSampling, "nce": NCE}[loss]
    extra = {"log_z": nce_log_z, "learn_log_z": nce_learn_z} if loss == "nce" else {}
    return cls(vocab_size, hidden_size, counts, samples=samples, alpha=alpha, seed=seed, init_range=init_range, **extra)
