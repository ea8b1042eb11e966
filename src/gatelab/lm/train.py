"""Training, evaluation, saving and sampling for RNN language models, top to bottom.

corpus = load_corpus("ptb", read_test=False)
config = LMConfig(loss="blackout", samples=100, alpha=0.4, epochs=2)
model, history = train(corpus, config, checkpoint="run.pt")   # resume=... continues it
print(perplexity(model, encode_test("ptb", None, corpus.vocab)))   # the test split, read once
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from gatelab.checkpoint import Checkpointer, check_resumable, load_state, rng_state, set_rng_state
from gatelab.devices import resolve_device
from gatelab.errors import GatelabError, check_choice
from gatelab.files import atomic_path, write_json
from gatelab.lm.corpus import IGNORE, Corpus, make_streams
from gatelab.lm.fused import FusedStep, fusable
from gatelab.lm.model import CELLS, RNNLM
from gatelab.lm.optim import RMSProp, clip_grad_norm
from gatelab.lm.output import LOSSES, make_output
from gatelab.lm.vocab import Vocab
from gatelab.progress import ScalarLog, bar, say
from gatelab.weights import config_from

CHECKPOINT_FORMAT = "gatelab.lm.train"
LOG_EVERY = 25  # chunks between host syncs: progress bar, finiteness check, TensorBoard scalars


@dataclass
class LMConfig:
    """Everything a training run needs. Defaults follow the paper's small-data (PTB) setting.

    The model and output layer: ``loss`` (softmax, blackout, nce, is), ``samples``
    (K), ``alpha`` (proposal power), ``cell`` (rnn = the paper's sigmoid RNN, or
    lstm), ``hidden``, ``embed`` (None = hidden). Training as in the authors'
    code: RMSProp (``lr``, ``rmsprop_decay``, ``rmsprop_eps``) on per-word mean
    gradients clipped to norm ``clip`` (0: no clipping), ``batch_size`` parallel
    streams, truncated BPTT over ``bptt`` steps with the state carried across
    chunks; after each epoch the learning rate is multiplied by ``lr_decay`` if
    validation perplexity improved and by ``lr_plateau_decay`` if it did not.
    ``include_unk``: whether targets that are ``<unk>`` count in perplexity.
    ``nce_log_z``: NCE's log normaliser, fixed, or learned from there with ``nce_learn_z``.

    The paper's PTB setting (issue 5): sigmoid RNN, hidden 128, batch 32, BPTT 20,
    K=100, alpha=0.4. RMSProp's decay 0.999 and eps 1e-3 and the clipping norm are
    the authors' demo values; the learning rate 0.1 was chosen on PTB validation
    perplexity (0.01, 0.03, 0.1 tried; the authors' demo used 0.01 with batch 8).
    """

    loss: str = "blackout"
    samples: int = 100
    alpha: float = 0.4
    cell: str = "rnn"
    hidden: int = 128
    embed: int | None = None
    batch_size: int = 32
    bptt: int = 20
    epochs: int = 10
    lr: float = 0.1
    rmsprop_decay: float = 0.999
    rmsprop_eps: float = 1e-3
    clip: float = 1.0
    lr_decay: float = 1.0
    lr_plateau_decay: float = 0.7
    nce_log_z: float = 0.0
    nce_learn_z: bool = False
    init_range: float = 0.08
    reset_at_eos: bool = True
    include_unk: bool = True
    max_train_words: int | None = None
    seed: int = 0
    device: str = "cpu"

    def validate(self, vocab_size: int | None = None) -> "LMConfig":
        """Refuse impossible settings (NaN, 0 or negatives where they make no sense) with a GatelabError."""
        check_choice("loss", self.loss, LOSSES)
        check_choice("cell", self.cell, CELLS)

        def need(name: str, ok, accepted: str) -> None:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value) or not ok(value):
                raise GatelabError(f"{name} must be {accepted}, got {value!r}")

        need("alpha", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
        need("samples", lambda v: v >= 1, "at least 1 (the number of samples K)")
        for name in ("hidden", "batch_size", "bptt", "epochs"):
            need(name, lambda v: v >= 1, "at least 1")
        for name in ("embed", "max_train_words"):
            need(name, lambda v: v is None or v >= 1, "at least 1 (or None)")
        for name in ("lr", "init_range"):
            need(name, lambda v: v > 0, "a finite number > 0")
        for name in ("rmsprop_eps", "lr_decay", "lr_plateau_decay"):  # shrink factors and a small constant
            need(name, lambda v: 0 < v <= 1, "in (0, 1]")
        need("clip", lambda v: v >= 0, "a finite number >= 0 (0: no clipping)")
        need("rmsprop_decay", lambda v: 0 <= v < 1, "in [0, 1)")
        need("nce_log_z", lambda v: abs(v) <= 100, "a log normaliser in [-100, 100]")
        need("seed", lambda v: 0 <= v < 2**63, "an integer in [0, 2**63)")
        if vocab_size is not None and self.loss != "softmax" and self.samples > vocab_size:
            raise GatelabError(
                f"the number of samples K={self.samples} is larger than the vocabulary "
                f"({vocab_size} words); choose K <= {vocab_size}"
            )
        resolve_device(self.device)
        return self

    @classmethod
    def from_dict(cls, data, where: str = "config") -> "LMConfig":
        """The config a ``dataclasses.asdict`` dict describes, every field type-checked (GatelabError if not)."""
        return config_from(cls, data, where, "language-model")


def build_model(vocab: Vocab, config: LMConfig) -> RNNLM:
    """The model ``config`` describes, for ``vocab`` (whose counts feed the proposal)."""
    config.validate(len(vocab))
    torch.manual_seed(config.seed)
    output = make_output(
        config.loss,
        len(vocab),
        config.hidden,
        counts=vocab.counts_tensor(),
        samples=config.samples,
        alpha=config.alpha,
        seed=config.seed,
        init_range=config.init_range,
        nce_log_z=config.nce_log_z,
        nce_learn_z=config.nce_learn_z,
    )
    model = RNNLM(
        len(vocab),
        output,
        hidden_size=config.hidden,
        embed_size=config.embed,
        cell=config.cell,
        reset_at_eos=config.reset_at_eos,
        eos_id=vocab.eos_id,
        init_range=config.init_range,
    )
    return model.to(config.device)


@torch.no_grad()
def evaluate(
    model: RNNLM, ids: torch.Tensor, batch_size: int = 32, bptt: int = 50, include_unk: bool = True, unk_id: int = 1
) -> dict:
    """Exact full-softmax evaluation of an encoded text: total -log p, counted targets, perplexity.

    Every target after the leading ``</s>`` counts, ``</s>`` included; ``<unk>``
    targets count only with ``include_unk``. Streams start at sentence
    boundaries, so with a model that resets at ``</s>`` the result equals
    scoring one sentence at a time. Sums stay on the device until the end.
    """
    was_training = model.training
    model.eval()
    device = model.embedding.weight.device
    streams = make_streams(ids, batch_size, model.eos_id)
    state = None
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for inputs, targets in streams.chunks(bptt):
        if not include_unk:
            targets = targets.masked_fill(targets == unk_id, IGNORE)
        count += int((targets != IGNORE).sum())  # counted on the host copy: no device sync
        nll, state = model.nll(inputs.to(device), targets.to(device), state)
        total += nll.double().sum()
    model.train(was_training)
    if count == 0:
        raise GatelabError("nothing to evaluate: the text has no countable target")
    total = float(total)
    return {"nll": total, "words": count, "ppl": math.exp(total / count)}


def perplexity(model: RNNLM, ids: torch.Tensor, include_unk: bool = True, **kw) -> float:
    """Exact full-softmax perplexity of ``ids`` (see ``evaluate``)."""
    return evaluate(model, ids, include_unk=include_unk, **kw)["ppl"]


def unigram_perplexity(vocab: Vocab, ids: torch.Tensor, include_unk: bool = True) -> float:
    """Perplexity of the training unigram distribution (add-one smoothed) on ``ids``: the bar a model must clear."""
    counts = vocab.counts_tensor() + 1.0
    logp = (counts / counts.sum()).log()
    targets = ids[1:]
    if not include_unk:
        targets = targets[targets != vocab.unk_id]
    return math.exp(-float(logp[targets].mean()))


def _fresh_epoch(epoch: int, device) -> dict:
    """The position at the start of ``epoch``: chunk 0, no carried state, empty sums."""
    return {
        "epoch": epoch,
        "chunk": 0,
        "state": None,
        "loss_sum": torch.zeros((), dtype=torch.float64, device=device),
        "words": 0,
        "seconds": 0.0,
    }


def train(
    corpus: Corpus,
    config: LMConfig,
    quiet: bool = True,
    model: RNNLM | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 300.0,
    resume: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
    compiled: bool = True,
) -> tuple[RNNLM, list[dict]]:
    """Train a language model on ``corpus.train``; return it and one record per epoch.

    After each epoch the exact perplexity of ``corpus.valid`` (a validation text,
    never the test text) drives the learning-rate schedule, and the model with
    the best validation perplexity is the one returned; without ``corpus.valid``
    the rate is multiplied by ``lr_decay`` each epoch and the last model is returned.
    ``corpus.test`` is never read here.

    ``checkpoint`` is a file that receives the whole training state (model,
    RMSProp state, schedule, RNG and sampler states, the position down to the
    BPTT chunk with the carried hidden state, history, config) at each epoch's
    end and at most every ``checkpoint_every`` seconds inside an epoch;
    ``resume`` continues from such a file (and keeps writing to it unless
    ``checkpoint`` names another). With one thread and a fixed seed a resumed run
    equals an uninterrupted one exactly. SIGINT/SIGTERM save and raise
    ``gatelab.checkpoint.Interrupted``. ``log_dir``: TensorBoard scalars.
    """
    config.validate(len(corpus.vocab))
    torch.manual_seed(config.seed)
    if model is None:
        model = build_model(corpus.vocab, config)
    device = model.embedding.weight.device
    ids = corpus.train
    if config.max_train_words is not None:
        ids = ids[: config.max_train_words + 1]
    streams = make_streams(ids, config.batch_size, corpus.vocab.eos_id)
    chunks = list(streams.chunks(config.bptt))
    counts = torch.stack([(targets != IGNORE).sum() for _, targets in chunks]).tolist()  # one sync, before training
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = RMSProp(params, lr=config.lr, decay=config.rmsprop_decay, eps=config.rmsprop_eps)
    sampler = getattr(model.output, "generator", None)
    data = {"vocab": corpus.vocab.fingerprint(), "train_ids": int(ids.numel())}
    pos = _fresh_epoch(1, device)
    run = {"history": [], "last_ppl": math.inf, "best_ppl": math.inf, "best_state": None}
    if resume is not None:
        saved = load_state(resume, "language-model checkpoint")
        check_resumable(saved, CHECKPOINT_FORMAT, dataclasses.asdict(config), resume, may_differ=("epochs", "device"))
        if saved.get("data") != data:
            raise GatelabError(
                f"cannot resume {resume}: it was trained on another text or vocabulary "
                f"({saved.get('data')} there, {data} now); resume with the same data"
            )
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            set_rng_state(saved["rng"])
            if sampler is not None:
                sampler.set_state(saved["sampler"])
            pos.update(saved["position"])
            run.update(saved["run"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise GatelabError(f"{resume} is not a complete language-model checkpoint ({exc})") from None
        pos["loss_sum"] = pos["loss_sum"].to(device)
        if pos["state"] is not None:
            pos["state"] = (
                pos["state"].to(device)
                if isinstance(pos["state"], torch.Tensor)
                else tuple(s.to(device) for s in pos["state"])
            )
        say(f"resuming {resume} at epoch {pos['epoch']}, chunk {pos['chunk']}", quiet)
    history = run["history"]

    def snapshot() -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": dataclasses.asdict(config),
            "data": data,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(),
            "sampler": sampler.get_state() if sampler is not None else None,
            "position": pos,
            "run": run,
        }

    nominal = config.batch_size * config.bptt
    fused = FusedStep(model, optimizer, nominal, config.clip, IGNORE) if compiled and fusable(model) else None
    with (
        Checkpointer(checkpoint if checkpoint is not None else resume, checkpoint_every) as ckpt,
        ScalarLog(log_dir) as scalars,
    ):
        while pos["epoch"] <= config.epochs:
            epoch, lr = pos["epoch"], optimizer.param_groups[0]["lr"]
            model.train()
            progress = bar(streams.n_targets, f"epoch {epoch}/{config.epochs}", unit="w", quiet=quiet, unit_scale=True)
            progress.update(pos["words"])
            start = time.perf_counter() - pos["seconds"]
            for i in range(pos["chunk"], len(chunks)):
                inputs, targets = chunks[i]
                if fused is not None and counts[i]:
                    loss, pos["state"] = fused(inputs, targets, pos["state"])
                    pos["loss_sum"] += loss
                    pos["words"] += counts[i]
                else:
                    loss, _, state = model(inputs.to(device), targets.to(device), pos["state"])
                    pos["state"] = model.detach_state(state)
                    if counts[i]:
                        optimizer.zero_grad(set_to_none=True)
                        # per-word mean over the nominal chunk size (as the authors' code does), so the short,
                        # padded chunks at the end of an epoch take proportionally small steps
                        (loss / nominal).backward()
                        clip_grad_norm(params, config.clip)
                        optimizer.step()
                        pos["loss_sum"] += loss.detach().double()
                        pos["words"] += counts[i]
                pos["chunk"], pos["seconds"] = i + 1, time.perf_counter() - start
                progress.update(counts[i])
                if (i + 1) % LOG_EVERY == 0 or i + 1 == len(chunks):  # the only host sync of the loop
                    mean = float(pos["loss_sum"]) / max(pos["words"], 1)
                    if not math.isfinite(mean):
                        raise GatelabError("the training loss became infinite or NaN; lower the learning rate")
                    rate = pos["words"] / max(pos["seconds"], 1e-9)
                    progress.set_postfix_str(f"loss {mean:.3f} | {rate:,.0f} w/s", refresh=False)
                    scalars.add((epoch - 1) * len(chunks) + i + 1, **{"train/loss": mean, "train/words_per_s": rate})
                ckpt.step(snapshot)
            progress.close()
            record = {
                "epoch": epoch,
                "lr": lr,
                "loss": float(pos["loss_sum"]) / max(pos["words"], 1),
                "words": pos["words"],
                "seconds": pos["seconds"],
                "words_per_s": pos["words"] / max(pos["seconds"], 1e-9),
            }
            factor = config.lr_decay
            if corpus.valid is not None:
                ppl = perplexity(model, corpus.valid, include_unk=config.include_unk, unk_id=corpus.vocab.unk_id)
                record["valid_ppl"] = ppl
                factor = config.lr_decay if ppl < run["last_ppl"] else config.lr_plateau_decay
                run["last_ppl"] = ppl
                if ppl < run["best_ppl"]:
                    run["best_ppl"] = ppl
                    run["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            for group in optimizer.param_groups:
                group["lr"] *= factor
            history.append(record)
            say(
                f"epoch {epoch}/{config.epochs}: train loss {record['loss']:.4f}, {record['words_per_s']:,.0f} words/s"
                + (f", valid ppl {record['valid_ppl']:.2f}" if "valid_ppl" in record else "")
                + f", lr {lr:.4g}",
                quiet,
            )
            scalars.add(
                epoch,
                **{
                    "epoch/train_loss": record["loss"],
                    "epoch/valid_ppl": record.get("valid_ppl"),
                    "epoch/words_per_s": record["words_per_s"],
                    "epoch/lr": lr,
                },
            )
            pos.update(_fresh_epoch(epoch + 1, device))
            ckpt.epoch_end(snapshot)
    if run["best_state"] is not None:
        model.load_state_dict(run["best_state"])
    return model, history


# ---------------------------------------------------------------- saving and loading


def save_model(
    model: RNNLM, vocab: Vocab, config: LMConfig, folder: str | os.PathLike, extra: dict | None = None
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``vocab.json`` into ``folder``, each atomically."""
    from safetensors.torch import save_file

    if len(vocab) != model.vocab_size:
        raise GatelabError(f"vocabulary has {len(vocab)} words but the model {model.vocab_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab.save(folder / "vocab.json")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = {
        "config": dataclasses.asdict(config),
        "vocab_size": len(vocab),
        "vocab_fingerprint": vocab.fingerprint(),
        **(extra or {}),
    }
    write_json(folder / "config.json", meta)
    return folder


# models saved before the LSTM moved from nn.LSTMCell to nn.LSTM name its weights without the layer suffix
_OLD_LSTM_NAMES = {f"lstm.{k}": f"lstm.{k}_l0" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def load_model(
    folder: str | os.PathLike, vocab: Vocab | None = None, device: str = "cpu"
) -> tuple[RNNLM, Vocab, LMConfig]:
    """Load a model saved by ``save_model``; any defect of the folder is a GatelabError.

    The config is type-checked field by field and the tensors' names and shapes
    are checked against it before the model is built. If ``vocab`` is given it
    must be the vocabulary the model was trained with (same words, same order),
    since the model's rows would silently mean different words otherwise.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    resolve_device(device)
    for name in ("config.json", "vocab.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise GatelabError(f"{folder} is not a gatelab language model: {name} is missing")
    try:
        meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or "config" not in meta:
            raise GatelabError(f"{folder / 'config.json'} is malformed (no 'config' object)")
        config = LMConfig.from_dict(meta["config"], folder / "config.json")
        config.device = device
        config.validate()
    except GatelabError:
        raise
    except (ValueError, RecursionError) as exc:  # GatelabError is a ValueError, as are JSON and decoding errors
        raise GatelabError(f"{folder / 'config.json'} is malformed ({str(exc)[:200]})") from None
    saved_vocab = Vocab.load(folder / "vocab.json")
    if saved_vocab.fingerprint() != meta.get("vocab_fingerprint") or len(saved_vocab) != meta.get("vocab_size"):
        raise GatelabError(f"{folder}: vocab.json does not match the vocabulary the model was trained with")
    if vocab is not None and vocab != saved_vocab:
        diff = next((i for i, (a, b) in enumerate(zip(vocab.words, saved_vocab.words)) if a != b), None)
        where = f"first difference at id {diff}" if diff is not None else "different sizes"
        raise GatelabError(
            f"vocabulary mismatch: the checkpoint has {len(saved_vocab)} words, the given "
            f"vocabulary {len(vocab)} ({where}); use the checkpoint's own vocab.json"
        )
    try:
        state = load_file(str(folder / "model.safetensors"))
    except Exception as exc:  # truncated or foreign: safetensors raises its own error, OSError or others
        raise GatelabError(
            f"{folder / 'model.safetensors'} is not a readable safetensors file "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    state = {_OLD_LSTM_NAMES.get(k, k): v for k, v in state.items()}
    # check the shapes that fix the model's size before building it, so a config edited to an absurd
    # size is refused instead of allocated
    V = len(saved_vocab)
    expect = {"output.weight": (V, config.hidden), "embedding.weight": (V, config.embed or config.hidden)}
    for key, shape in expect.items():
        got = tuple(state[key].shape) if key in state else None
        if got != shape:
            raise GatelabError(
                f"{folder}: tensor {key!r} is {got if got is not None else 'missing'}, but config.json "
                f"and vocab.json describe {shape}; the files do not belong together"
            )
    try:
        model = build_model(saved_vocab, config)
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise GatelabError(f"{folder}: the weights do not fit the saved configuration ({str(exc)[:200]})") from None
    return model, saved_vocab, config


# ---------------------------------------------------------------- generation


@torch.no_grad()
def generate(
    model: RNNLM,
    vocab: Vocab,
    words: int = 50,
    prime: str | list[str] | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    allow_unk: bool = False,
) -> list[str]:
    """Sample ``words`` tokens from the exact softmax, continuing ``prime`` (a sentence start).

    Sentence ends come out as ``</s>``; ``allow_unk=False`` never emits ``<unk>``.
    """
    if words < 1:
        raise GatelabError(f"words must be at least 1, got {words}")
    if temperature <= 0:
        raise GatelabError(f"temperature must be positive, got {temperature}")
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    device = model.embedding.weight.device
    tokens = prime.split() if isinstance(prime, str) else list(prime or [])
    ids = [vocab.eos_id] + vocab.encode(tokens)
    hs, state = model.hidden_states(torch.tensor(ids, device=device).unsqueeze(1))
    h = hs[-1]
    out = []
    for _ in range(words):
        logits = (h @ model.output.weight.t()).squeeze(0) / temperature
        if not allow_unk:
            logits[vocab.unk_id] = -math.inf
        word = int(torch.multinomial(torch.softmax(logits.float().cpu(), 0), 1, generator=gen))
        out.append(vocab.words[word])
        hs, state = model.hidden_states(torch.tensor([[word]], device=device), state)
        h = hs[-1]
    return out
