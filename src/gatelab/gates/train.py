"""Training gated classifiers on MNIST-like data with the papers' settings, and their checkpoints.

``fit`` carves a seeded validation split from the training images, reports
the validation error of the averaged weights every ``eval_every`` epochs and
reads the test split once, after the last epoch. It checkpoints (model, Adam,
weight average, RNG states, position in the epoch and the epoch's order,
history, config) at each epoch's end and every
``checkpoint_every`` seconds, and ``resume=PATH`` continues exactly where that
checkpoint stopped.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from gatelab.checkpoint import Checkpointer, check_resumable, load_state, rng_state, set_rng_state
from gatelab.data import IMAGE_DATASETS, image_splits, mnist_tensors
from gatelab.devices import resolve_device
from gatelab.errors import GatelabError
from gatelab.evaluation import classifier_scores
from gatelab.files import atomic_path
from gatelab.gates.api import GRANULARITIES, expected_l0, soft_gates, sparsify, train_step, undecided_gates
from gatelab.gates.average import WeightAverage
from gatelab.gates.estimators import ESTIMATORS, GATE_FUNCTIONS
from gatelab.gates.export import summary
from gatelab.gates.models import MODELS, WEIGHT_INITS, authors_init_, build_model
from gatelab.progress import ScalarLog, bar, say
from gatelab.weights import config_from, read_weights

# The authors' settings (l0-arm and L0_regularization code): lambda per gated layer, in units of 1/N,
# and the initial keep probability (1 - the initial drop rate).
PAPER_LAMBDA = {
    "mlp": {"fc1": 0.1, "fc2": 0.1, "fc3": 0.1},
    "lenet5": {"conv1": 10.0, "conv2": 0.5, "fc1": 0.1, "fc2": 10.0},
    "resnet": 0.1,
}
PAPER_KEEP_PROB = {"mlp": {"fc1": 0.8, "fc2": 0.5, "fc3": 0.5}, "lenet5": 0.5, "resnet": 0.5}
# The other LeNet-5 lambda the authors give: their README's example command (lambas="[.1,.1,.1,.1]"),
# against PAPER_LAMBDA["lenet5"], their config.py default.
README_LAMBDA = {"lenet5": {"conv1": 0.1, "conv2": 0.1, "fc1": 0.1, "fc2": 0.1}}
# The factor of their gated expected-L2 term, (weight_decay / 2) sum P(open) ||w||^2, on the mean loss.
# Their MLP multiplies 5e-4 by N and the regularizer divides by N again: 5e-4. Their LeNet-5 passes 5e-4
# and divides by N = 60,000: 5e-4 / 60,000. No setting of theirs fits our small ResNet: none.
PAPER_WEIGHT_DECAY = {"mlp": 5e-4, "lenet5": 5e-4 / 60000, "resnet": 0.0}

FORMAT = "gatelab.gates.fit"  # the kind of the training checkpoints that ``fit`` writes


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _choice(names) -> tuple:
    return (lambda v: v in names, "one of " + ", ".join(sorted(names)))


_COUNT = (lambda v: _is_int(v) and v >= 1, "an integer >= 1")
_PER_LAYER = (
    lambda v: v is None or _is_number(v) or isinstance(v, (list, tuple)) and len(v) > 0 and all(map(_is_number, v)),
    "null (the paper's), a number, or a list of numbers (one per gated layer)",
)
# What each TrainConfig field accepts: the type and the range, checked by ``validate``.
_ACCEPTED = {
    "model": _choice(MODELS),
    "dataset": _choice(IMAGE_DATASETS),
    "granularity": _choice(GRANULARITIES),
    "estimator": _choice(ESTIMATORS),
    "lam": _PER_LAYER,
    "keep_prob": _PER_LAYER,
    "gate_function": _choice(GATE_FUNCTIONS),
    "k": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "epochs": _COUNT,
    "batch_size": _COUNT,
    "lr": (lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "weight_init": _choice(WEIGHT_INITS),
    "weight_decay": (lambda v: v is None or _is_number(v) and v >= 0, "null (the authors') or a finite number >= 0"),
    "ema": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1) (0: evaluate the last weights)"),
    "eval_every": _COUNT,
    "train_examples": (lambda v: v is None or _is_int(v) and v >= 1, "null (all) or an integer >= 1"),
    "val_size": _COUNT,
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "device": (lambda v: isinstance(v, str), "a device name such as cpu or cuda"),
}


@dataclass
class TrainConfig:
    """One gated training run. Defaults are the papers': Adam 1e-3, batch 128, 200 epochs, k = 7.

    ``val_size`` images are carved from the training split (seeded by
    ``seed``) for the validation error, measured every ``eval_every`` epochs
    and after the last; ``train_examples`` then keeps only the first n of the
    remaining training images (quick runs). ``weight_decay``: the gated
    expected-L2 factor (None: the authors', ``PAPER_WEIGHT_DECAY``). ``ema``:
    decay of the moving average of the weights that validation, the test and
    the saved model use (the authors' 0.999).
    """

    model: str = "lenet5"
    dataset: str = "mnist"
    granularity: str = "structured"
    estimator: str = "arm"
    lam: float | list[float] | None = None  # None: the paper's per-layer values
    keep_prob: float | list[float] | None = None  # None: the paper's
    gate_function: str = "scaled_sigmoid"
    k: float = 7.0
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float | None = None  # None: the authors' for the model
    weight_init: str = "torch"  # "authors": their He-normal weights and zero biases (authors_init_)
    ema: float = 0.999
    eval_every: int = 1
    train_examples: int | None = None  # None: every training image outside the validation split
    val_size: int = 5000
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> "TrainConfig":
        """Check every field's type and range; a GatelabError names the field and what it accepts."""
        for name, (ok, accepted) in _ACCEPTED.items():
            value = getattr(self, name)
            try:
                good = ok(value)
            except TypeError:  # an unhashable value tested against a set of names
                good = False
            if not good:
                raise GatelabError(f"config field {name!r} is {value!r}; accepted: {accepted}")
        return self

    @classmethod
    def from_dict(cls, data, where: str = "config") -> "TrainConfig":
        """A validated config from a mapping (say, JSON from a checkpoint); wrong types, unknown fields refused."""
        return config_from(cls, data, where, "gates training")


@dataclass
class History:
    """Numbers of each evaluated epoch (every ``eval_every``th and the last), and the test error read once.

    ``val_error`` uses the test-time gates, ``val_error_soft`` the expected gates
    E[z]; ``undecided`` counts the gates with 0.1 < P(open) < 0.9. A gap between
    the two errors while many gates are undecided comes from those gates, not
    from the weights. (Both are None for epochs evaluated by older code.)
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_error: list[float] = field(default_factory=list)
    val_error_soft: list[float | None] = field(default_factory=list)
    undecided: list[int | None] = field(default_factory=list)
    expected_l0: list[float] = field(default_factory=list)
    kept_units: list[int] = field(default_factory=list)
    architecture: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    test_error: float | None = None


def build_gated(config: TrainConfig) -> torch.nn.Module:
    """The config's model with its gates, on the config's device."""
    config.validate()
    model = build_model(config.model)
    if config.weight_init == "authors":
        authors_init_(model)
    lam = PAPER_LAMBDA[config.model] if config.lam is None else config.lam
    keep = PAPER_KEEP_PROB[config.model] if config.keep_prob is None else config.keep_prob
    sparsify(
        model,
        config.granularity,
        config.estimator,
        lam=lam,
        keep_prob=keep,
        gate_function=config.gate_function,
        k=config.k,
    )
    device = resolve_device(config.device)
    model = model.to(device)
    with torch.no_grad():  # records the input shape, without drawing gates
        model.eval()(torch.zeros(1, 1, 28, 28, device=device))
    return model.train()


def training_data(config: TrainConfig, data_root=None) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_val, y_val)``: the config's validation split carved from the training split."""
    return image_splits(config.dataset, config.val_size, config.seed, config.train_examples, data_root)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def fit(
    config: TrainConfig,
    data_root=None,
    *,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 300.0,
    resume: str | os.PathLike | None = None,
    quiet: bool = False,
    log_dir: str | os.PathLike | None = None,
) -> tuple[torch.nn.Module, History]:
    """Train a gated model on MNIST or Fashion-MNIST; returns the model and its history.

    checkpoint: where to keep the training checkpoint (each epoch's end, and every
      ``checkpoint_every`` seconds); None keeps none. SIGINT/SIGTERM save it and
      raise ``gatelab.checkpoint.Interrupted``.
    resume: a checkpoint of an earlier run with the same config (``epochs`` and
      ``device`` may differ) to continue from; with one thread and the same
      device the result equals an uninterrupted run's exactly.
    quiet: no progress bar and no per-epoch lines; log_dir: TensorBoard scalars.

    Validation (every ``config.eval_every`` epochs and after the last), the test
    error (the test split is read once, after training, for
    ``history.test_error``) and the returned model use the moving average of
    the weights (``config.ema``).
    """
    config.validate()
    device = resolve_device(config.device)
    state = None
    if resume is not None:
        state = load_state(resume, "gates training checkpoint")
        check_resumable(
            state, FORMAT, asdict(config), resume, may_differ=("epochs", "device"), defaults=asdict(TrainConfig())
        )
    torch.manual_seed(config.seed)
    model = build_gated(config)
    convolutional = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    if convolutional:  # faster convolutions and pooling on the CPU; back to the usual layout at the end
        model = model.to(memory_format=torch.channels_last)
    x_train, y_train, x_val, y_val = training_data(config, data_root)
    x_train, y_train = x_train.to(device), y_train.to(device)
    n = len(x_train)
    steps_per_epoch = math.ceil(n / config.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, foreach=True)
    average = WeightAverage(model, config.ema)
    weight_decay = PAPER_WEIGHT_DECAY[config.model] if config.weight_decay is None else config.weight_decay
    history = History()
    done, step, order = 0, 0, None  # finished epochs, steps into the next one, and its order
    loss_sum = torch.zeros((), device=device)  # the epoch's summed loss, read once at its end
    seconds_before = 0.0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            average.load_state_dict(state["average"])
            history = History(**state["history"])
            for series in (history.val_error_soft, history.undecided):  # a checkpoint of older code lacks them
                series.extend([None] * (len(history.epoch) - len(series)))
            done, step, order, seconds_before = state["epoch"], state["step"], state["order"], state["seconds"]
            loss_sum = state["loss_sum"].to(device)
            set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise GatelabError(f"{resume} does not hold a resumable gates run ({_reason(exc)})") from None
        say(f"resuming {resume} at epoch {done + 1}, step {step} of {steps_per_epoch}", quiet)
    start = time.perf_counter()

    def snapshot() -> dict:
        return {
            "format": FORMAT,
            "config": asdict(config),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "average": average.state_dict(),
            "rng": rng_state(),
            "epoch": done,
            "step": step,
            "order": order,
            "loss_sum": loss_sum.detach().cpu(),
            "history": asdict(history),
            "seconds": seconds_before + time.perf_counter() - start,
        }

    progress = bar(config.epochs * steps_per_epoch, "training", "step", quiet, initial=done * steps_per_epoch + step)
    with progress, Checkpointer(checkpoint, every=checkpoint_every) as ckpt, ScalarLog(log_dir) as scalars:
        for epoch in range(done + 1, config.epochs + 1):
            if order is None:
                order = torch.randperm(n)
            for begin in range(step * config.batch_size, n, config.batch_size):
                idx = order[begin : begin + config.batch_size].to(device)
                out = train_step(
                    model, x_train[idx], y_train[idx], optimizer, dataset_size=n, weight_decay=weight_decay
                )
                average.update()
                loss_sum += out["loss"] * len(idx)
                step += 1
                progress.update(1)
                ckpt.step(snapshot)
            if epoch % config.eval_every and epoch != config.epochs:
                done, step, order = epoch, 0, None
                ckpt.epoch_end(snapshot)
                continue
            with average.applied():
                val = classifier_scores(model, x_val, y_val)
                with soft_gates(model):
                    soft = classifier_scores(model, x_val, y_val)
                s = summary(model)
                history.undecided.append(int(undecided_gates(model)))
                history.expected_l0.append(float(expected_l0(model).detach()))
            epochs_summed = epoch - (history.epoch[-1] if history.epoch else 0)  # since the last evaluation
            history.epoch.append(epoch)
            history.train_loss.append(float(loss_sum) / (n * epochs_summed))
            history.val_loss.append(val["loss"])
            history.val_error.append(val["error"])
            history.val_error_soft.append(soft["error"])
            history.kept_units.append(sum(r.kept for r in s.layers))
            history.architecture.append(s.architecture)
            history.seconds.append(seconds_before + time.perf_counter() - start)
            done, step, order, loss_sum = epoch, 0, None, torch.zeros((), device=device)
            say(
                f"epoch {epoch}/{config.epochs}: loss {history.train_loss[-1]:.4f}, "
                f"validation error {val['error']:.2f}% ({soft['error']:.2f}% with soft gates), "
                f"expected L0 {history.expected_l0[-1]:,.0f}, kept {s.architecture}, "
                f"{history.undecided[-1]} gates undecided ({history.seconds[-1]:.0f} s)",
                quiet,
            )
            scalars.add(
                epoch,
                **{
                    "train/loss": history.train_loss[-1],
                    "validation/loss": val["loss"],
                    "validation/error": val["error"],
                    "validation/error_soft_gates": soft["error"],
                    "gates/expected_l0": history.expected_l0[-1],
                    "gates/kept_units": history.kept_units[-1],
                    "gates/undecided": history.undecided[-1],
                },
            )
            ckpt.epoch_end(snapshot)
    average.copy_to_model()
    if convolutional:
        model = model.to(memory_format=torch.contiguous_format)
    x_test, y_test = mnist_tensors(config.dataset, "test", data_root)
    history.test_error = classifier_scores(model, x_test, y_test)["error"]
    say(f"test error {history.test_error:.2f}% (test split, read once after training)", quiet)
    return model, history


def save_checkpoint(model: torch.nn.Module, config: TrainConfig, path) -> Path:
    """Write the gated model's weights and gates (safetensors) with the config in its metadata."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata={"gatelab": json.dumps({"train_config": asdict(config)})})
    return path


def load_checkpoint(path) -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild a gated model saved by ``save_checkpoint``, on the CPU.

    Any fault (not safetensors, truncated, no or malformed config, a config
    field of the wrong type, renamed or missing tensors, wrong shapes) raises a
    GatelabError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise GatelabError(f"checkpoint {path} does not exist")
    meta, _ = read_weights(path, "gates checkpoint")
    data = meta.get("train_config")
    config = TrainConfig.from_dict({**data, "device": "cpu"} if isinstance(data, dict) else data, path)
    model = build_gated(config)
    try:
        load_model(model, str(path), device="cpu")
    except Exception as exc:  # renamed or missing tensors, wrong shapes, a truncated file
        raise GatelabError(
            f"{path} does not hold the weights of a gated {config.model} ({_reason(exc)}); "
            "it may be truncated or edited: use a file written by `gatelab gates train`"
        ) from None
    return model.eval(), config
