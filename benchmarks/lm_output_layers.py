"""Training-step time and peak memory of LM output layers at vocabulary sizes 10k, 100k and 1M.

Compares, with the same model otherwise (gatelab's sigmoid RNN, lazy sparse RMSProp,
clipping): full softmax, torch.nn.AdaptiveLogSoftmaxWithLoss, NCE, importance
sampling and BlackOut (same K and alpha for the three sampled layers).

- 10k: PTB (real text, its 10,000-word vocabulary);
- 100k and 1M: a seeded synthetic Zipf corpus (word ranks drawn with p ∝ 1/rank),
  labelled "synthetic" in the output: no real corpus with such a vocabulary is on
  this machine.

Each (vocabulary, method) runs in a fresh process, so its peak resident memory
(ru_maxrss) is its own. A step is forward + backward + clipping + optimiser update
of one B x T chunk. Prints the median wall ms/step, words/s, the speed-up over the
full softmax, the median process-CPU ms/step and its speed-up (steadier than wall
time on a shared, loaded machine when torch uses one thread) and the peak memory,
plus the machine.

Also, with ``--lstm``: the LSTM option's training step (forward + backward of the
recurrent layer and BlackOut) before and after it moved from an ``nn.LSTMCell``
stepped through time in Python to ``nn.LSTM`` over the segments between sentence
resets, on PTB, with the same weights, interleaved in one process; prints both
medians and the ratio.

    python benchmarks/lm_output_layers.py                      # all sizes
    python benchmarks/lm_output_layers.py --vocab 10000 --steps 20
    python benchmarks/lm_output_layers.py --lstm --steps 30
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import sys
import time

METHODS = ("softmax", "adaptive", "nce", "is", "blackout")


def zipf_corpus(vocab_size: int, n_words: int, seed: int):
    """Seeded synthetic text: ids drawn from p(rank r) ∝ 1/r, id 0 (</s>) about every 25 words. Returns ids, counts."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab_size, dtype=np.float64)
    p /= p.sum()
    ids = rng.choice(np.arange(1, vocab_size), size=n_words, p=p)
    ids[rng.random(n_words) < 0.04] = 0
    counts = np.concatenate([[0.04 * n_words], p * 0.96 * n_words])
    return torch.from_numpy(ids.astype("int64")), torch.from_numpy(counts)


def _ptb(n_words: int):

    from gatelab.lm.corpus import load_corpus

    corpus = load_corpus("ptb")
    return corpus.train[:n_words], corpus.vocab.counts_tensor(), len(corpus.vocab)


def _adaptive_layer(vocab_size: int, hidden: int):
    """torch's adaptive softmax behind gatelab's OutputLayer interface (forward -> (summed loss, count))."""
    from torch import nn

    from gatelab.lm.corpus import IGNORE

    class Adaptive(nn.Module):
        name = "adaptive"

        def __init__(self):
            super().__init__()
            cutoffs = [c for c in (2000, 10000, 100000) if c < vocab_size - 1]
            self.vocab_size, self.hidden_size = vocab_size, hidden
            self.asm = nn.AdaptiveLogSoftmaxWithLoss(hidden, vocab_size, cutoffs=cutoffs, div_value=4.0)

        def forward(self, hs, targets):
            keep = targets.reshape(-1) != IGNORE
            out = self.asm(hs.reshape(-1, hidden)[keep], targets.reshape(-1)[keep])
            return out.loss * int(keep.sum()), int(keep.sum())

    return Adaptive()


def run_one(job: dict, queue) -> None:
    import torch

    torch.set_num_threads(job["threads"])
    from gatelab.lm.model import RNNLM
    from gatelab.lm.optim import RMSProp, clip_grad_norm
    from gatelab.lm.output import make_output

    V, H, B, T, K = job["vocab"], job["hidden"], job["batch"], job["bptt"], job["samples"]
    n_words = (job["steps"] + job["warmup"]) * B * T + 1
    if job["source"] == "ptb":
        ids, counts, V = _ptb(n_words * 2)
    else:
        ids, counts = zipf_corpus(V, n_words * 2, job["seed"])
    torch.manual_seed(job["seed"])
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if job["method"] == "adaptive":
        output = _adaptive_layer(V, H)
    else:
        output = make_output(job["method"], V, H, counts=counts, samples=K, alpha=job["alpha"], seed=job["seed"])
    model = RNNLM(V, output, hidden_size=H)
    opt = RMSProp(model.parameters(), lr=0.001)
    params = list(model.parameters())
    data = ids[: (ids.numel() - 1) // B * B + 1]
    L = (data.numel() - 1) // B
    inputs = data[:-1][: L * B].view(B, L).t().contiguous()
    targets = data[1:][: L * B].view(B, L).t().contiguous()
    state = None
    times, cpu = [], []
    for step in range(job["warmup"] + job["steps"]):
        x, y = inputs[step * T : (step + 1) * T], targets[step * T : (step + 1) * T]
        start, cpu_start = time.perf_counter(), time.process_time()
        loss, n, state = model(x, y, state)
        state = model.detach_state(state)
        opt.zero_grad(set_to_none=True)
        (loss / n).backward()
        clip_grad_norm(params, 1.0)
        opt.step()
        elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
        if step >= job["warmup"]:
            times.append(elapsed)
            cpu.append(cpu_elapsed)
    times.sort()
    cpu.sort()
    median = times[len(times) // 2]
    cpu_median = cpu[len(cpu) // 2]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(
        {
            **job,
            "vocab": V,
            "ms_per_step": median * 1e3,
            "words_per_s": B * T / median,
            "cpu_ms_per_step": cpu_median * 1e3,
            "cpu_words_per_s": B * T / cpu_median,
            "peak_rss_mb": peak / 1024,
            "model_rss_mb": (peak - base_rss) / 1024,
        }
    )


def lstm_speed(args) -> dict:
    """Median training-step ms of the old (LSTMCell loop) and new (nn.LSTM over segments) LSTM, same weights."""
    import torch
    from torch import nn

    from gatelab.lm.model import RNNLM
    from gatelab.lm.output import make_output

    torch.set_num_threads(args.threads)
    B, T, H = args.batch, args.bptt, args.hidden
    n = (args.steps + args.warmup) * B * T + 1
    ids, counts, V = _ptb(n)
    torch.manual_seed(args.seed)
    output = make_output("blackout", V, H, counts=counts, samples=args.samples, alpha=args.alpha, seed=args.seed)
    model = RNNLM(V, output, hidden_size=H, cell="lstm")
    cell = nn.LSTMCell(H, H)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(cell, name).data.copy_(getattr(model.lstm, name + "_l0").data)

    def old(inputs, state):  # the implementation before: one LSTMCell call per time step, state zeroed at </s>
        x, keep = model.embedding(inputs), (inputs != model.eos_id).float().unsqueeze(-1)
        (h, c), outs = state, []
        for t in range(inputs.shape[0]):
            h, c = cell(x[t], (h * keep[t], c * keep[t]))
            outs.append(h)
        return torch.stack(outs), (h, c)

    L = (ids.numel() - 1) // B
    inputs = ids[:-1][: L * B].view(B, L).t().contiguous()
    targets = ids[1:][: L * B].view(B, L).t().contiguous()
    times = {"old": [], "new": []}
    states = {"old": model.init_state(B), "new": model.init_state(B)}
    for step in range(args.warmup + args.steps):
        x, y = inputs[step * T : (step + 1) * T], targets[step * T : (step + 1) * T]
        for kind in ("old", "new"):  # interleaved, so both see the same load
            start = time.perf_counter()
            hs, state = (old if kind == "old" else model.hidden_states)(x, states[kind])
            loss, _ = model.output(hs, y)
            loss.backward()
            states[kind] = model.detach_state(state)
            model.zero_grad(set_to_none=True)
            cell.zero_grad(set_to_none=True)
            if step >= args.warmup:
                times[kind].append(time.perf_counter() - start)
    med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
    print(
        f"LSTM training step on PTB (hidden {H}, batch {B} x bptt {T}, BlackOut K={args.samples}), "
        f"median of {args.steps}: LSTMCell loop {med['old']:.1f} ms, nn.LSTM over segments {med['new']:.1f} ms, "
        f"speed-up {med['old'] / med['new']:.2f}x"
    )
    return {"old_ms_per_step": med["old"], "new_ms_per_step": med["new"], "speedup": med["old"] / med["new"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--bptt", type=int, default=10, help="steps per chunk (default 10: keeps the 1M full softmax in memory)"
    )
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.4)
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--big-steps", type=int, default=3, help="timed steps for the full softmax at >= 1M words")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--lstm", action="store_true", help="only compare the old and new LSTM steps on PTB")
    args = p.parse_args(argv)

    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load} "
        f"(1/5/15 min), torch {torch.__version__}, {args.threads} thread(s), python {platform.python_version()}"
    )
    if args.lstm:
        result = lstm_speed(args)
        if args.json:
            from gatelab.files import write_json

            write_json(args.json, {"args": vars(args), "lstm": result, "loadavg": os.getloadavg()})
        return 0
    print(
        f"model: sigmoid RNN, hidden {args.hidden}, batch {args.batch} x bptt {args.bptt} = "
        f"{args.batch * args.bptt} words/step; K={args.samples}, alpha={args.alpha} for nce/is/blackout"
    )
    ctx = mp.get_context("spawn")
    rows = []
    header = (
        f"{'vocab':>9} {'data':10} {'method':9} {'ms/step':>10} {'words/s':>10} {'speed-up':>9} "
        f"{'cpu ms/step':>12} {'cpu speed-up':>13} {'peak MB':>9}"
    )
    print(header)
    print("-" * len(header))
    for V in args.vocab:
        source = "ptb" if V == 10_000 else "synthetic"
        base = None
        for method in args.methods:
            steps = args.big_steps if (method == "softmax" and V >= 1_000_000) else args.steps
            job = dict(
                vocab=V,
                source=source,
                method=method,
                hidden=args.hidden,
                batch=args.batch,
                bptt=args.bptt,
                samples=args.samples,
                alpha=args.alpha,
                steps=steps,
                warmup=1 if steps < 5 else args.warmup,
                threads=args.threads,
                seed=args.seed,
            )
            q = ctx.Queue()
            proc = ctx.Process(target=run_one, args=(job, q))
            proc.start()
            proc.join()
            if proc.exitcode != 0 or q.empty():
                print(f"{V:>9,} {source:10} {method:9} failed (exit code {proc.exitcode})")
                continue
            r = q.get()
            if method == "softmax":
                base = (r["ms_per_step"], r["cpu_ms_per_step"])
            r["speedup_vs_softmax"] = base[0] / r["ms_per_step"] if base else None
            r["cpu_speedup_vs_softmax"] = base[1] / r["cpu_ms_per_step"] if base else None
            rows.append(r)
            sp = f"{r['speedup_vs_softmax']:.1f}x" if base else "-"
            csp = f"{r['cpu_speedup_vs_softmax']:.1f}x" if base else "-"
            print(
                f"{r['vocab']:>9,} {source:10} {method:9} {r['ms_per_step']:>10.1f} {r['words_per_s']:>10,.0f} "
                f"{sp:>9} {r['cpu_ms_per_step']:>12.1f} {csp:>13} {r['peak_rss_mb']:>9,.0f}",
                flush=True,
            )
    if args.json:
        from gatelab.files import write_json

        write_json(args.json, {"args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
