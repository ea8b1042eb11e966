"""The RNN language model: embedding, a recurrent layer (the paper's sigmoid RNN or an LSTM), an output layer."""

from __future__ import annotations

import torch
from torch import nn

from gatelab.errors import GatelabError, check_choice
from gatelab.lm.output import OutputLayer

CELLS = ("rnn", "lstm")


class _SigmoidRNN(torch.autograd.Function):
    """h_t = sigmoid(x_t + W_r (keep_t * h_{t-1})) over a chunk, with a hand-written BPTT.

    One autograd node per chunk instead of a few per time step: the backward
    pass is a short loop of (B x H) products, then one GEMM for the gradient of W_r.
    ``keep_t`` is 0 where the stream's input is a sentence boundary, which resets
    the state there and stops the gradient flowing across sentences (as in the
    authors' code).
    """

    @staticmethod
    def forward(ctx, x, h0, w_r, keep):
        hs = torch.empty_like(x)
        h = h0
        w_t = w_r.t()
        for t in range(x.shape[0]):
            torch.addmm(x[t], h * keep[t], w_t, out=hs[t])
            h = torch.sigmoid_(hs[t])
        ctx.save_for_backward(hs, h0, w_r, keep)
        return hs

    @staticmethod
    def backward(ctx, grad):
        hs, h0, w_r, keep = ctx.saved_tensors
        dz = grad * hs * (1.0 - hs)  # holds d(loss)/d(z_t) once the loop has added the carry
        carry = None
        for t in range(hs.shape[0] - 1, -1, -1):
            if carry is not None:
                dz[t].addcmul_(carry, hs[t] * (1.0 - hs[t]))
            carry = (dz[t] @ w_r) * keep[t]
        prev = torch.cat([h0.unsqueeze(0), hs[:-1]], 0) * keep
        d_w = dz.reshape(-1, dz.shape[-1]).t() @ prev.reshape(-1, prev.shape[-1])
        return dz, carry, d_w, None


def sigmoid_rnn(x: torch.Tensor, h0: torch.Tensor, w_r: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The paper's recurrent layer over a chunk: ``x`` (T, B, H), ``h0`` (B, H), ``keep`` (T, B, 1)."""
    return _SigmoidRNN.apply(x, h0, w_r, keep)


class RNNLM(nn.Module):
    """An RNN language model whose output layer is any ``OutputLayer``.

    ``cell="rnn"`` is the paper's model: h_t = sigmoid(E[w_t] + W_r h_{t-1}), no
    biases, embedding size equal to the hidden size (a projection is added when
    ``embed_size`` differs). ``cell="lstm"`` uses an LSTM layer instead. With
    ``reset_at_eos`` the state restarts at every sentence boundary, so streams of
    concatenated sentences score exactly like single sentences.
    """

    def __init__(
        self,
        vocab_size: int,
        output: OutputLayer,
        hidden_size: int = 128,
        embed_size: int | None = None,
        cell: str = "rnn",
        reset_at_eos: bool = True,
        eos_id: int = 0,
        init_range: float = 0.08,
    ):
        super().__init__()
        check_choice("cell", cell, CELLS)
        embed_size = embed_size or hidden_size
        if hidden_size < 1 or embed_size < 1:
            raise GatelabError(f"hidden and embedding sizes must be positive, got {hidden_size} and {embed_size}")
        if output.vocab_size != vocab_size or output.hidden_size != hidden_size:
            raise GatelabError(
                f"output layer is {output.vocab_size} x {output.hidden_size}, model is {vocab_size} x {hidden_size}"
            )
        self.vocab_size, self.hidden_size, self.embed_size = vocab_size, hidden_size, embed_size
        self.cell, self.reset_at_eos, self.eos_id = cell, reset_at_eos, eos_id
        self.embedding = nn.Embedding(vocab_size, embed_size, sparse=True)
        nn.init.uniform_(self.embedding.weight, -init_range, init_range)
        if cell == "rnn":
            self.proj = nn.Linear(embed_size, hidden_size, bias=False) if embed_size != hidden_size else None
            self.recurrent = nn.Parameter(torch.empty(hidden_size, hidden_size).uniform_(-init_range, init_range))
        else:
            self.lstm = nn.LSTM(embed_size, hidden_size)
            for p in self.lstm.parameters():
                nn.init.uniform_(p, -init_range, init_range)
        if self.cell == "rnn" and self.proj is not None:
            nn.init.uniform_(self.proj.weight, -init_range, init_range)
        self.output = output

    def init_state(self, batch_size: int):
        """The zero state for ``batch_size`` streams."""
        z = torch.zeros(batch_size, self.hidden_size, device=self.embedding.weight.device)
        return z if self.cell == "rnn" else (z, z.clone())

    @staticmethod
    def detach_state(state):
        return state.detach() if isinstance(state, torch.Tensor) else tuple(s.detach() for s in state)

    def hidden_states(self, inputs: torch.Tensor, state=None):
        """Run the recurrent layer over ``inputs`` (T, B); return (hidden (T, B, H), last state)."""
        if inputs.dim() != 2:
            raise GatelabError(f"inputs must be (time, batch) word ids, got shape {tuple(inputs.shape)}")
        if state is None:
            state = self.init_state(inputs.shape[1])
        x = self.embedding(inputs)
        if self.reset_at_eos:
            keep = (inputs != self.eos_id).to(x.dtype).unsqueeze(-1)
        else:
            keep = torch.ones(inputs.shape + (1,), dtype=x.dtype, device=x.device)
        if self.cell == "rnn":
            if self.proj is not None:
                x = self.proj(x)
            hs = sigmoid_rnn(x, state, self.recurrent, keep)
            return hs, hs[-1]
        if self.reset_at_eos:
            return self._lstm_segments(x, inputs == self.eos_id, state)
        out, (h, c) = self.lstm(x, (state[0].unsqueeze(0), state[1].unsqueeze(0)))
        return out, (h[0], c[0])

    def _lstm_segments(self, x: torch.Tensor, reset: torch.Tensor, state):
        """The LSTM over a chunk whose streams restart from the zero state where ``reset`` (T, B) is set.

        Each stream is cut into segments that begin at t = 0 (from the carried
        state) or at a reset (from zeros); all segments run as one packed batch
        through ``nn.LSTM`` and their outputs are put back in place. This equals
        stepping through time with the state zeroed before every reset input.
        """
        T, B = reset.shape
        starts = reset.t().clone()  # (B, T): stream-major, so a stream's segments are consecutive
        starts[:, 0] = True
        seg = torch.cumsum(starts.reshape(-1), 0) - 1  # the segment of every (stream, time) position
        lengths = torch.bincount(seg)
        first = torch.cumsum(lengths, 0) - lengths  # flat position where each segment begins
        pos = torch.arange(B * T, device=x.device) - first[seg]
        padded = x.new_zeros(lengths.numel(), T, x.shape[-1])
        padded[seg, pos] = x.transpose(0, 1).reshape(B * T, -1)
        # the segment that starts a stream at t = 0 continues its carried state (zeroed if t = 0 is a reset)
        heads = torch.nonzero(first % T == 0).flatten()
        carry = (~reset[0]).to(x.dtype).unsqueeze(-1)
        h0 = x.new_zeros(lengths.numel(), self.hidden_size).index_copy(0, heads, state[0] * carry)
        c0 = x.new_zeros(lengths.numel(), self.hidden_size).index_copy(0, heads, state[1] * carry)
        packed = nn.utils.rnn.pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, c_n) = self.lstm(packed, (h0.unsqueeze(0), c0.unsqueeze(0)))
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
        hs = out[seg, pos].view(B, T, -1).transpose(0, 1)
        last = seg.view(B, T)[:, -1]  # each stream's last segment ends with its final state
        return hs, (h_n[0, last], c_n[0, last])

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, state=None):
        """Training loss: (summed loss, number of targets, last state) for one chunk."""
        hs, state = self.hidden_states(inputs, state)
        loss, n = self.output(hs, targets)
        return loss, n, state

    def nll(self, inputs: torch.Tensor, targets: torch.Tensor, state=None):
        """Exact full-softmax -log p per target position (T, B), and the last state."""
        hs, state = self.hidden_states(inputs, state)
        return self.output.nll(hs, targets), state
