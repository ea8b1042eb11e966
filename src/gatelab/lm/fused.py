"""One compiled training step of the paper's model: sigmoid RNN, BlackOut output, clipping and sparse RMSProp.

The torch path runs the same step as a few dozen small operators per BPTT chunk; on a
CPU their dispatch costs more than the arithmetic (hidden 128, batch 32, K = 100). Here
the whole step is one numba call over float32 arrays that share memory with the model's
tensors and the optimiser's state, so checkpoints, resume and evaluation are unchanged.
The matrix products go to BLAS through ``np.dot``; everything else is plain loops.

The arithmetic is the torch path's (``model.RNNLM`` with ``output.BlackOut``,
``optim.clip_grad_norm`` and ``optim.RMSProp``), summed in another order:

    h_t = sigmoid(E[x_t] + W_r (keep_t h_{t-1}))                     keep_t = 0 at a sentence start
    a = s - log q;  p = softmax over {target} + valid samples of a
    L = -(log p_target + sum_j log(1 - p_j)) / nominal              valid: sample != target
    dL/da_target = (-1 + p_t - p_t S) / nominal,  dL/da_j = (p_j + p_j / (1 - p_j) - p_j S) / nominal,
    S = sum_j p_j / (1 - p_j)

then BPTT through the sigmoid, one joint L2 clip over the coalesced rows of E and W_out
and all of W_r, and RMSProp on the touched rows with the decay they missed applied lazily.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

CLAMP = np.float32(1.0 - 1e-7)  # the torch path's bound on p_j inside log(1 - p_j)


@njit(cache=True, fastmath=False)
def _rmsprop_rows(param, v, last, rows, grads, scale, step, lr, decay, eps):
    """RMSProp on the listed rows of ``param``, catching up the decay each row missed since it was last touched."""
    for u in range(rows.shape[0]):
        r = rows[u]
        factor = np.float32(decay ** (step - last[r]))  # d^(missed + 1), missed = step - 1 - last
        last[r] = step
        for i in range(param.shape[1]):
            g = grads[u, i] * scale
            vi = v[r, i] * factor + np.float32(1.0 - decay) * g * g
            v[r, i] = vi
            param[r, i] -= np.float32(lr) * g / (np.sqrt(vi) + np.float32(eps))


@njit(cache=True, fastmath=False)
def blackout_rnn_step(
    emb, rec, out, log_q, inputs, targets, samples, h0, eos, ignore, nominal,
    clip, lr, decay, eps, v_emb, last_emb, step_emb, v_rec, v_out, last_out, step_out, slot,
):  # fmt: skip
    """Forward, backward and update for one (T, B) chunk; returns (summed loss, the last hidden state).

    ``slot`` is a scratch int array of the vocabulary size filled with -1; it is left that way on return.
    """
    T, B = inputs.shape
    H = emb.shape[1]
    K = samples.shape[1]
    f32 = np.float32
    # ---- forward through the recurrent layer
    hs = np.empty((T, B, H), dtype=f32)
    prev = np.empty((T, B, H), dtype=f32)  # keep_t * h_{t-1}, the recurrent input at t
    h = h0.copy()
    rec_t = np.ascontiguousarray(rec.T)
    for t in range(T):
        for b in range(B):
            k = f32(1.0) if inputs[t, b] != eos else f32(0.0)
            for i in range(H):
                prev[t, b, i] = h[b, i] * k
        z = np.dot(prev[t], rec_t)
        for b in range(B):
            row = emb[inputs[t, b]]
            for i in range(H):
                hs[t, b, i] = f32(1.0) / (f32(1.0) + np.exp(-(z[b, i] + row[i])))
        h = hs[t]
    # ---- the output rows this chunk touches, each once: targets (IGNORE reads row 0, as the torch path does)
    n_out = 0
    out_rows = np.empty(T * (B + K), dtype=np.int64)
    for t in range(T):
        for b in range(B):
            y = max(targets[t, b], 0)
            if slot[y] < 0:
                slot[y] = n_out
                out_rows[n_out] = y
                n_out += 1
        for j in range(K):
            w = samples[t, j]
            if slot[w] < 0:
                slot[w] = n_out
                out_rows[n_out] = w
                n_out += 1
    g_out = np.zeros((n_out, H), dtype=f32)
    # ---- BlackOut loss and its gradient, per time step
    dh = np.zeros((T, B, H), dtype=f32)
    loss = 0.0
    inv_nominal = f32(1.0 / nominal)
    w_s = np.empty((K, H), dtype=f32)
    p_s = np.empty(K, dtype=f32)
    for t in range(T):
        for j in range(K):
            w_s[j] = out[samples[t, j]]
        a_s = np.dot(hs[t], w_s.T)  # (B, K) sample scores, then minus log q
        d_s = np.zeros((B, K), dtype=f32)
        for b in range(B):
            y = targets[t, b]
            if y == ignore:
                continue
            a_t = f32(0.0)
            for i in range(H):
                a_t += hs[t, b, i] * out[y, i]
            a_t -= log_q[y]
            top = a_t
            for j in range(K):
                a_s[b, j] -= log_q[samples[t, j]]
                if samples[t, j] != y and a_s[b, j] > top:
                    top = a_s[b, j]
            total = np.exp(a_t - top)
            for j in range(K):
                if samples[t, j] != y:
                    total += np.exp(a_s[b, j] - top)
            log_z = top + np.log(total)
            p_t = np.exp(a_t - log_z)
            ell = log_z - a_t
            ratio_sum = f32(0.0)
            for j in range(K):
                if samples[t, j] == y:
                    continue
                p = np.exp(a_s[b, j] - log_z)
                p_s[j] = p
                if p > CLAMP:  # clamped in the torch path: a constant log(1 - p), no gradient of its own
                    ell -= np.log1p(-CLAMP)
                else:
                    ell -= np.log1p(-p)
                    ratio_sum += p / (f32(1.0) - p)
            loss += ell
            for j in range(K):
                if samples[t, j] == y:
                    continue
                p = p_s[j]
                own = p / (f32(1.0) - p) if p <= CLAMP else f32(0.0)
                d_s[b, j] = (p + own - p * ratio_sum) * inv_nominal
            d_t = (f32(-1.0) + p_t - p_t * ratio_sum) * inv_nominal
            ry = slot[y]
            for i in range(H):
                g_out[ry, i] += d_t * hs[t, b, i]
                dh[t, b, i] += d_t * out[y, i]
        dh[t] += np.dot(d_s, w_s)
        g_s = np.dot(d_s.T, hs[t])  # (K, H)
        for j in range(K):
            r = slot[samples[t, j]]
            for i in range(H):
                g_out[r, i] += g_s[j, i]
    for r in range(n_out):  # free ``slot`` for the input rows
        slot[out_rows[r]] = -1
    # ---- BPTT through the sigmoid recurrence; the input rows' gradients, each row once
    n_emb = 0
    emb_rows = np.empty(T * B, dtype=np.int64)
    emb_index = np.empty((T, B), dtype=np.int64)
    for t in range(T):
        for b in range(B):
            x = inputs[t, b]
            if slot[x] < 0:
                slot[x] = n_emb
                emb_rows[n_emb] = x
                n_emb += 1
            emb_index[t, b] = slot[x]
    for r in range(n_emb):
        slot[emb_rows[r]] = -1
    g_emb = np.zeros((n_emb, H), dtype=f32)
    g_rec = np.zeros((H, H), dtype=f32)
    carry = np.zeros((B, H), dtype=f32)
    dz = np.empty((B, H), dtype=f32)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            e = emb_index[t, b]
            for i in range(H):
                s = hs[t, b, i]
                dz[b, i] = (dh[t, b, i] + carry[b, i]) * s * (f32(1.0) - s)
                g_emb[e, i] += dz[b, i]
        g_rec += np.dot(dz.T, prev[t])
        carry = np.dot(dz, rec)
        for b in range(B):
            if inputs[t, b] == eos:
                for i in range(H):
                    carry[b, i] = 0.0
    # ---- one joint L2 clip, then RMSProp
    sq = 0.0
    for r in range(n_emb):
        for i in range(H):
            sq += g_emb[r, i] * g_emb[r, i]
    for r in range(H):
        for i in range(H):
            sq += g_rec[r, i] * g_rec[r, i]
    for r in range(n_out):
        for i in range(H):
            sq += g_out[r, i] * g_out[r, i]
    scale = f32(1.0)
    if clip > 0:
        scale = f32(min(1.0, clip / (np.sqrt(sq) + 1e-12)))
    _rmsprop_rows(emb, v_emb, last_emb, emb_rows[:n_emb], g_emb, scale, step_emb, lr, decay, eps)
    for r in range(H):
        for i in range(H):
            g = g_rec[r, i] * scale
            vi = v_rec[r, i] * f32(decay) + f32(1.0 - decay) * g * g
            v_rec[r, i] = vi
            rec[r, i] -= f32(lr) * g / (np.sqrt(vi) + f32(eps))
    _rmsprop_rows(out, v_out, last_out, out_rows[:n_out], g_out, scale, step_out, lr, decay, eps)
    return loss, hs[T - 1].copy()


def fusable(model) -> bool:
    """Whether ``model`` is the paper's model on a CPU in float32, the case the compiled step covers."""
    w = model.embedding.weight
    return (
        model.cell == "rnn"
        and model.proj is None
        and getattr(model.output, "name", "") == "blackout"
        and w.device.type == "cpu"
        and w.dtype == torch.float32
    )


class FusedStep:
    """``step(inputs, targets, state) -> (summed loss, next state)``: the trainer's step, compiled.

    It reads and writes the model's parameters and ``optimizer``'s RMSProp state
    (``v``, ``last``, ``step``) in place, in the layout the torch path uses, and
    draws the samples from the output layer's own generator, so the two paths can
    take turns within one run and checkpoints do not tell them apart.
    """

    def __init__(self, model, optimizer, nominal: int, clip: float, ignore: int):
        self.model, self.optimizer = model, optimizer
        self.nominal, self.clip, self.ignore = float(nominal), float(clip), int(ignore)
        self.params = [model.embedding.weight, model.recurrent, model.output.weight]
        self.slot = np.full(model.vocab_size, -1, dtype=np.int64)
        self.log_q = model.output.log_q.numpy()

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, state: torch.Tensor | None):
        group = self.optimizer.param_groups[0]
        s_emb, s_rec, s_out = (self.optimizer.begin_step(p) for p in self.params)
        s_emb["lagging"] = s_out["lagging"] = True
        s_rec["last"].fill_(s_rec["step"])
        samples = self.model.output.draw(inputs.shape[0])
        h0 = self.model.init_state(inputs.shape[1]) if state is None else state
        arrays = [p.detach().numpy() for p in self.params]
        ids = [np.ascontiguousarray(t.numpy()) for t in (inputs, targets, samples)]
        loss, last = blackout_rnn_step(
            *arrays, self.log_q, *ids, h0.detach().numpy(), self.model.eos_id, self.ignore, self.nominal,
            self.clip, group["lr"], group["decay"], group["eps"], s_emb["v"].numpy(), s_emb["last"].numpy(),
            s_emb["step"], s_rec["v"].numpy(), s_out["v"].numpy(), s_out["last"].numpy(), s_out["step"], self.slot,
        )  # fmt: skip
        return torch.tensor(loss, dtype=torch.float64), torch.from_numpy(last)
