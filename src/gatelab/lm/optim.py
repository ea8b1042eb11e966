"""RMSProp that updates only the rows a sparse gradient touches, and clipping that understands sparse gradients."""

from __future__ import annotations

import torch

from gatelab.errors import GatelabError


class RMSProp(torch.optim.Optimizer):
    """RMSProp as in the BlackOut authors' code: v = d v + (1 - d) g^2, w -= lr g / (sqrt(v) + eps).

    For a sparse gradient (the embedding and the sampled output rows) only the
    touched rows are read and written. The decay a row missed while it was not
    touched is applied when it is next touched (d to the power of the steps
    since), so the result equals dense RMSProp exactly (an untouched row has a
    zero gradient and does not move) at the cost of the touched rows only.
    """

    def __init__(self, params, lr: float = 0.01, decay: float = 0.999, eps: float = 1e-3):
        if lr <= 0:
            raise GatelabError(f"learning rate must be positive, got {lr}")
        if not 0.0 <= decay < 1.0:
            raise GatelabError(f"RMSProp decay must lie in [0, 1), got {decay}")
        if eps <= 0:
            raise GatelabError(f"RMSProp eps must be positive, got {eps}")
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps))

    def begin_step(self, p: torch.Tensor) -> dict:
        """``p``'s state (``v``, ``last``: the step each row was last updated, ``step``), advanced to this step."""
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["v"] = torch.zeros_like(p)
            state["last"] = torch.zeros(p.shape[0] if p.dim() else 1, dtype=torch.long, device=p.device)
        state["step"] += 1
        return state

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, d, eps = group["lr"], group["decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.begin_step(p)
                step, v = state["step"], state["v"]
                g = p.grad
                if g.is_sparse:
                    state["lagging"] = True  # rows this step does not touch fall behind; caught up lazily
                    g = g.coalesce()
                    rows, vals = g.indices()[0], g.values()
                    if rows.numel() == 0:
                        continue
                    missed = (step - 1 - state["last"][rows]).to(p.dtype)
                    factor = torch.pow(torch.full_like(missed, d), missed + 1).unsqueeze(-1)
                    v_rows = v[rows] * factor + (1.0 - d) * vals * vals
                    v[rows] = v_rows
                    state["last"][rows] = step
                    p.index_add_(0, rows, vals / (v_rows.sqrt() + eps), alpha=-lr)
                else:
                    if state.get("lagging") and p.dim():  # rows left behind by earlier sparse steps
                        missed = (step - 1 - state["last"]).to(p.dtype)
                        v.mul_(torch.pow(torch.full_like(missed, d), missed).view(-1, *[1] * (p.dim() - 1)))
                    state["lagging"] = False
                    state["last"].fill_(step)
                    v.mul_(d).addcmul_(g, g, value=1.0 - d)
                    p.addcdiv_(g, v.sqrt().add_(eps), value=-lr)


@torch.no_grad()
def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    """Scale all gradients (dense or sparse) so that their joint L2 norm is at most ``max_norm``; return the norm.

    Sparse gradients are coalesced first, so a row touched twice counts once with its summed gradient.
    ``max_norm`` 0 turns clipping off. The norm is returned as a 0-dim tensor and the scaling happens
    on the device, so a training step never waits for the host.
    """
    grads = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            grads.append(p.grad._values())
        else:
            grads.append(p.grad)
    if not grads:
        return torch.zeros(())
    total = torch.sqrt(sum((g.float() * g.float()).sum() for g in grads))
    if max_norm > 0:  # scale by min(1, max_norm / norm) on the device: no host sync
        scale = (max_norm / (total + 1e-12)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.to(g.dtype))
    return total
