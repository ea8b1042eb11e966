"""The recurrent layer, the sparse optimiser and clipping."""

import pytest
import torch

from gatelab.lm.model import RNNLM, sigmoid_rnn
from gatelab.lm.optim import RMSProp, clip_grad_norm
from gatelab.lm.output import BlackOut, FullSoftmax


def _loop_rnn(x, h0, w, keep):
    h, out = h0, []
    for t in range(x.shape[0]):
        h = torch.sigmoid(x[t] + (h * keep[t]) @ w.t())
        out.append(h)
    return torch.stack(out)


def test_sigmoid_rnn_matches_autograd_loop_and_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    keep = (torch.rand(6, 3, 1) > 0.3).double()
    out = sigmoid_rnn(x, h0, w, keep)
    ref = _loop_rnn(x, h0, w, keep)
    assert torch.allclose(out, ref)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, h0, w), g)
    want = torch.autograd.grad(ref, (x, h0, w), g)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b, c: sigmoid_rnn(a, b, c, keep), (x, h0, w))


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_state_resets_at_sentence_boundary(cell):
    """After </s> the model's predictions do not depend on what came before."""
    torch.manual_seed(1)
    V, H = 20, 8
    model = RNNLM(V, FullSoftmax(V, H), hidden_size=H, cell=cell)
    a = torch.tensor([[5], [7], [0], [3], [4]])
    b = torch.tensor([[9], [2], [0], [3], [4]])
    ha, _ = model.hidden_states(a)
    hb, _ = model.hidden_states(b)
    assert not torch.allclose(ha[1], hb[1])
    assert torch.allclose(ha[2:], hb[2:])


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_truncated_bptt_carries_state(cell):
    torch.manual_seed(2)
    V, H = 15, 6
    model = RNNLM(V, FullSoftmax(V, H), hidden_size=H, embed_size=4, cell=cell)
    ids = torch.randint(1, V, (10, 2))
    whole, _ = model.hidden_states(ids)
    first, state = model.hidden_states(ids[:4])
    second, _ = model.hidden_states(ids[4:], model.detach_state(state))
    assert torch.allclose(torch.cat([first, second]), whole, atol=1e-6)


def test_lstm_equals_stepping_through_time_with_resets():
    """The packed nn.LSTM over segments equals the former LSTMCell loop, state zeroed at every </s> input."""
    torch.manual_seed(5)
    V, H, E, T, B = 9, 5, 4, 11, 4
    model = RNNLM(V, FullSoftmax(V, H), hidden_size=H, embed_size=E, cell="lstm").double()
    cell = torch.nn.LSTMCell(E, H).double()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(cell, name).data.copy_(getattr(model.lstm, name + "_l0").data)
    ids = torch.randint(0, 4, (T, B))  # id 0 (</s>) about a quarter of the time
    ids[0, 1], ids[:, 2], ids[-1, 3] = 0, 3, 0  # a reset at t = 0, a stream without any, one at the end
    state = tuple(torch.randn(B, H, dtype=torch.float64, requires_grad=True) for _ in range(2))

    def stepwise(ids, state):
        x, keep = model.embedding(ids), (ids != 0).double().unsqueeze(-1)
        (h, c), outs = state, []
        for t in range(ids.shape[0]):
            h, c = cell(x[t], (h * keep[t], c * keep[t]))
            outs.append(h)
        return torch.stack(outs), (h, c)

    got, (h, c) = model.hidden_states(ids, state)
    want, (h_ref, c_ref) = stepwise(ids, state)
    assert torch.allclose(got, want, atol=1e-12) and torch.allclose(h, h_ref, atol=1e-12)
    assert torch.allclose(c, c_ref, atol=1e-12)
    g = torch.randn_like(got)
    weights = [model.embedding.weight, model.lstm.weight_ih_l0, model.lstm.weight_hh_l0]
    grads = torch.autograd.grad((got * g).sum() + h.sum() + c.sum(), [*state, *weights])
    grads_ref = torch.autograd.grad(
        (want * g).sum() + h_ref.sum() + c_ref.sum(), [*state, model.embedding.weight, cell.weight_ih, cell.weight_hh]
    )
    for a, b in zip(grads, grads_ref):
        assert torch.allclose(a.to_dense(), b.to_dense(), atol=1e-12)


def test_sparse_rmsprop_equals_dense_rmsprop():
    """Lazy per-row updates give exactly what dense RMSProp gives on the same gradients."""
    torch.manual_seed(3)
    w_sparse = torch.nn.Parameter(torch.randn(10, 3, dtype=torch.float64))
    w_dense = torch.nn.Parameter(w_sparse.detach().clone())
    opt_s = RMSProp([w_sparse], lr=0.05, decay=0.9, eps=1e-3)
    opt_d = RMSProp([w_dense], lr=0.05, decay=0.9, eps=1e-3)
    for _ in range(8):
        rows = torch.randint(0, 10, (4,))  # repeated rows are summed, rows skip steps
        vals = torch.randn(4, 3, dtype=torch.float64)
        grad = torch.sparse_coo_tensor(rows.unsqueeze(0), vals, (10, 3))
        w_sparse.grad = grad
        w_dense.grad = grad.to_dense()
        opt_s.step()
        opt_d.step()
        assert torch.allclose(w_sparse, w_dense, atol=1e-12)


def test_clip_grad_norm_handles_sparse_and_dense():
    a = torch.nn.Parameter(torch.zeros(5, 2))
    b = torch.nn.Parameter(torch.zeros(3))
    a.grad = torch.sparse_coo_tensor(
        torch.tensor([[1, 1, 3]]), torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, 4.0]]), (5, 2)
    )
    b.grad = torch.tensor([0.0, 0.0, 12.0])
    norm = clip_grad_norm([a, b], 1.0)
    assert float(norm) == pytest.approx(13.0)
    total = (a.grad.to_dense().pow(2).sum() + b.grad.pow(2).sum()).sqrt()
    assert float(total) == pytest.approx(1.0, rel=1e-5)


def test_blackout_training_step_touches_only_sampled_rows():
    torch.manual_seed(4)
    V, H = 1000, 8
    counts = torch.arange(V, 0, -1).double()
    model = RNNLM(V, BlackOut(V, H, counts, samples=10, alpha=0.4), hidden_size=H)
    before = model.output.weight.detach().clone()
    emb_before = model.embedding.weight.detach().clone()
    opt = RMSProp(model.parameters(), lr=0.01)
    inputs = torch.randint(0, V, (5, 2))
    targets = torch.randint(0, V, (5, 2))
    loss, n, _ = model(inputs, targets)
    (loss / n).backward()
    assert model.output.weight.grad.is_sparse and model.embedding.weight.grad.is_sparse
    opt.step()
    changed = (model.output.weight.detach() != before).any(1).nonzero().flatten()
    assert len(changed) <= 5 * 2 + 5 * 10
    assert set(targets.flatten().tolist()) <= set(changed.tolist())
    changed_emb = (model.embedding.weight.detach() != emb_before).any(1).nonzero().flatten()
    assert set(changed_emb.tolist()) <= set(inputs.flatten().tolist())
