"""The batched torch path: many windows per step, for GPUs (``device="cuda"``); it also runs on CPU.

A chunk of encoded tokens is turned into windows with numpy (subsampling, the randomly
shrunk window, context positions grouped ``batch_size`` at a time, one shared draw of
noise words per group, noise words equal to the centre word masked out). The update of a
step of ``M`` groups is the HogBatch math with batched matrix products:

    S = Y X^T  (M x K x B),   G = alpha * mask * (label - sigmoid(S)),
    W_out.index_add_(G X),    W_in.index_add_(G^T Y)

all groups of a step read the rows as they were before the step (synchronous minibatch).
A noise word drawn twice appears twice, which equals the multiplicity of the compiled kernel.
"""

from __future__ import annotations

import numpy as np
import torch

#: the most noise words one step draws: a step holds fewer windows when ``negative`` is large
STEP_NOISE_WORDS = 1 << 20


class TorchTrainer:
    """Holds the two matrices on ``device`` and trains on chunks of encoded tokens."""

    def __init__(
        self,
        w_in: np.ndarray,
        w_out: np.ndarray,
        keep: np.ndarray,
        table: np.ndarray,
        window: int,
        negative: int,
        batch_size: int,
        device: str = "cpu",
        windows_per_step: int = 2048,
    ):
        self.device = torch.device(device)
        if self.device.type == "cpu":
            self.w_in, self.w_out = torch.from_numpy(w_in), torch.from_numpy(w_out)  # shared memory
        else:
            self.w_in, self.w_out = torch.from_numpy(w_in).to(self.device), torch.from_numpy(w_out).to(self.device)
        self._host = (w_in, w_out)
        self.keep, self.table = keep, table
        self.window, self.negative = window, negative
        self.batch_size = max(1, min(batch_size, 2 * window))
        self.windows_per_step = windows_per_step
        offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
        groups = -(-len(offsets) // self.batch_size)
        pad = groups * self.batch_size - len(offsets)
        # offset 0 marks padding (never a context)
        self.offsets = np.concatenate([offsets, np.zeros(pad, dtype=offsets.dtype)]).reshape(groups, self.batch_size)

    def windows(self, stream: np.ndarray, rng: np.random.Generator):
        """Groups of one chunk: ((centres, contexts, context mask, position), raw words, effective words)."""
        tok = np.asarray(stream)
        sent = np.cumsum(tok == -1) - (tok == -1)
        raw = int((tok != -1).sum())
        valid = tok >= 0
        prob = self.keep[np.where(valid, tok, 0)]
        kept = valid & (rng.random(len(tok), dtype=np.float32) < prob)
        w, s = tok[kept], sent[kept]
        frac = (np.flatnonzero(kept) + 1) / max(len(tok), 1)
        n = len(w)
        if n == 0:
            return None, raw, 0
        shrink = rng.integers(0, self.window, n)
        groups, bs = self.offsets.shape
        pos = np.arange(n)[:, None, None] + self.offsets[None]  # n x G x B
        posc = pos.clip(0, n - 1)
        mask = (
            (self.offsets != 0)[None]
            & (pos >= 0)
            & (pos < n)
            & (s[posc] == s[:, None, None])
            & (np.abs(self.offsets)[None] <= (self.window - shrink)[:, None, None])
        )
        ctx = w[posc]
        centre = np.repeat(w, groups)
        ctx, mask = ctx.reshape(n * groups, bs), mask.reshape(n * groups, bs)
        frac = np.repeat(frac, groups)
        keep_rows = mask.any(axis=1)
        centre, ctx, mask, frac = centre[keep_rows], ctx[keep_rows], mask[keep_rows], frac[keep_rows]
        return (centre, ctx, mask, frac), raw, n

    def step(self, centre, ctx, mask, noise, noise_mask, alpha) -> None:
        """One synchronous update for a batch of groups (numpy or torch inputs; ``alpha`` per group)."""
        dev = self.device
        t = lambda a, dtype=None: torch.as_tensor(a, device=dev, dtype=dtype)  # noqa: E731
        centre, ctx, noise = t(centre, torch.long), t(ctx, torch.long), t(noise, torch.long)
        mask, noise_mask = t(mask, torch.float32), t(noise_mask, torch.float32)
        alpha = t(alpha, torch.float32)
        outs = torch.cat([centre[:, None], noise], dim=1)  # M x K
        out_mask = torch.cat([torch.ones_like(centre, dtype=torch.float32)[:, None], noise_mask], dim=1)
        x = self.w_in[ctx]  # M x B x D
        y = self.w_out[outs]  # M x K x D
        s = torch.bmm(y, x.transpose(1, 2))  # M x K x B
        label = torch.zeros_like(s)
        label[:, 0, :] = 1.0
        sig = torch.where(s > 6, torch.ones_like(s), torch.where(s < -6, torch.zeros_like(s), torch.sigmoid(s)))
        g = (label - sig) * alpha[:, None, None] * out_mask[:, :, None] * mask[:, None, :]
        d_out = torch.bmm(g, x)  # M x K x D
        d_in = torch.bmm(g.transpose(1, 2), y)  # M x B x D
        dim = self.w_in.shape[1]
        self.w_out.index_add_(0, outs.reshape(-1), d_out.reshape(-1, dim))
        self.w_in.index_add_(0, ctx.reshape(-1), d_in.reshape(-1, dim))

    def train_chunk(self, stream: np.ndarray, alpha0: float, alpha1: float, seed: int) -> tuple[int, int]:
        rng = np.random.default_rng(seed)
        groups, raw, effective = self.windows(stream, rng)
        if groups is None:
            return raw, effective
        centre, ctx, mask, frac = groups
        alpha = (alpha0 + (alpha1 - alpha0) * frac).astype(np.float32)
        m = max(1, min(self.windows_per_step, STEP_NOISE_WORDS // self.negative))  # bounded memory for any negative
        with torch.no_grad():
            for a in range(0, len(centre), m):
                sl = slice(a, a + m)
                noise = self.table[rng.integers(0, len(self.table), (len(centre[sl]), self.negative))]
                self.step(centre[sl], ctx[sl], mask[sl], noise, noise != centre[sl, None], alpha[sl])
        return raw, effective

    def sync_to_host(self) -> None:
        """Copy device matrices back into the numpy arrays (no-op on CPU, which shares memory)."""
        if self.device.type != "cpu":
            self._host[0][:] = self.w_in.cpu().numpy()
            self._host[1][:] = self.w_out.cpu().numpy()

    def sync_from_host(self) -> None:
        if self.device.type != "cpu":
            self.w_in.copy_(torch.from_numpy(self._host[0]))
            self.w_out.copy_(torch.from_numpy(self._host[1]))
