"""NICE mask learning: a stochastic binary gate on every pixel, trained against a fixed classifier.

The gated image is ``z * x + (1 - z) * background(x)``. The gates' parameters
(log-alpha for hard concrete, phi for ARM) minimise

    cross-entropy(classifier(gated image), target) + lam * E[fraction of open gates]

so the open gates mark the pixels the prediction depends on. As in the paper,
an amortised mask network maps an image to its per-pixel gate parameters in one
forward pass; per-image optimisation of the parameters is offered as the
slower, network-free alternative. The classifier's weights never change.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gatelab.checkpoint import Checkpointer, check_resumable, load_state, rng_state, set_rng_state
from gatelab.devices import resolve_device
from gatelab.errors import GatelabError, check_choice
from gatelab.evaluation import predict
from gatelab.gates.estimators import make_estimator
from gatelab.nice.compress import lowres
from gatelab.progress import bar
from gatelab.training import train_epochs
from gatelab.weights import config_from, load_weights, read_weights, save_weights

MODES = ("amortized", "per_image")
NICE_ESTIMATORS = ("hard_concrete", "arm")
BACKGROUNDS = ("zeros", "lowres")
TARGETS = ("prediction", "label")
# Per-image compression masks' default L0 strength: the full reproductions chose 2 on validation for both
# classifiers on MNIST and Fashion-MNIST (grid 0.5, 1, 2; issue 15)
COMPRESS_LAM = 2.0


@dataclass
class NICEConfig:
    """Mask learning settings. Defaults follow the authors' MNIST code: hard concrete gates, Adam 1e-3,
    batch 100, 10 epochs with the learning rate divided by 10 after 5."""

    # L0 strength: nats of cross-entropy worth keeping every pixel. 0.5 for explanations: of 0.1, 0.25, 0.5 and 2 it
    # has the best score averaged over the MNIST and Fashion-MNIST reproductions' validation splits; 2 kept too few
    # pixels to rank the rest (issue 15, README). Compression masks use COMPRESS_LAM
    lam: float = 0.5
    estimator: str = "hard_concrete"
    mode: str = "amortized"
    background: str = "zeros"  # what a closed gate shows: black, or the low-resolution image
    lowres_factor: int = 8
    cell: int = 1  # gate size in pixels: 1 is the paper's per-pixel gate, 8 matches JPEG's blocks
    target: str = "prediction"  # explain the classifier's own decision, or the true label
    init_keep: float = 0.9
    epochs: int = 10
    lr_drop_epoch: int = 5
    lr: float = 1e-3
    batch_size: int = 100
    steps: int = 300  # per-image mode: optimisation steps per batch of images
    train_examples: int | None = None
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> "NICEConfig":
        check_choice("mode", self.mode, MODES)
        check_choice("estimator", self.estimator, NICE_ESTIMATORS)
        check_choice("background", self.background, BACKGROUNDS)
        check_choice("target", self.target, TARGETS)
        if self.mode == "per_image" and self.target != "prediction":
            raise GatelabError("per-image masks explain the prediction: use target='prediction' with mode='per_image'")
        if not self.lam >= 0:
            raise GatelabError(f"lam must be >= 0 (0 keeps every pixel), got {self.lam}")
        if not 0 < self.init_keep < 1:
            raise GatelabError(f"init_keep must be a probability in (0, 1), got {self.init_keep}")
        for name in ("epochs", "batch_size", "steps", "lowres_factor", "cell"):
            if getattr(self, name) < 1:
                raise GatelabError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise GatelabError(f"lr must be positive, got {self.lr}")
        if self.lowres_factor > 64 or self.cell > 64:
            raise GatelabError(
                f"lowres_factor and cell are block sizes in pixels, at most 64; got {self.lowres_factor}, {self.cell}"
            )
        return self


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation), nn.ReLU())


class MaskNetwork(nn.Module):
    """A small U-Net: image (N, C, H, W) -> per-pixel gate parameters (N, 1, H, W).

    Two strided convolutions and a dilated bottleneck let every pixel's gate see
    the whole 28x28 image; skip connections keep the mask as sharp as the pixels.

    The output is ``head(instance_norm(features)) + LEVEL_SCALE * level``: the
    head sees features normalised over each image, so its weights can only set
    how pixels of one image differ, and one scalar sets the common level. Without
    the normalisation the L0 penalty's uniform pull was met by every layer's
    weights growing together under Adam: the gate parameters ran off to -1000
    within a few dozen steps, exactly where the early layout put them, the
    hard concrete gates froze shut or open, and the masks collapsed to one
    image-independent blob (issue 15).
    """

    LEVEL_SCALE = 10.0  # the level moves LEVEL_SCALE x lr per Adam step: as fast as the contrast, not 10x slower

    def __init__(self, in_channels: int = 1, width: int = 16, init_phi: float = 0.0):
        super().__init__()
        self.enc1 = _conv(in_channels, width)
        self.enc2 = nn.Sequential(_conv(width, 2 * width, stride=2), _conv(2 * width, 2 * width))
        self.bottleneck = nn.Sequential(_conv(2 * width, 2 * width, stride=2), _conv(2 * width, 2 * width, dilation=2))
        self.dec2 = _conv(4 * width, 2 * width)
        self.dec1 = _conv(3 * width, width)
        self.head = nn.Conv2d(width, 1, 1, bias=False)
        nn.init.zeros_(self.head.weight)
        self.level = nn.Parameter(torch.tensor(init_phi / self.LEVEL_SCALE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        b = self.bottleneck(e2)
        d2 = self.dec2(torch.cat([F.interpolate(b, size=e2.shape[-2:]), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:]), e1], 1))
        return self.head(F.instance_norm(d1)) + self.LEVEL_SCALE * self.level


def background(images: torch.Tensor, kind: str, factor: int) -> torch.Tensor:
    """What a closed gate shows: zeros, or the image averaged over ``factor`` x ``factor`` cells."""
    return torch.zeros_like(images) if kind == "zeros" else lowres(images, factor)


class NICE:
    """Explain a fixed classifier with per-pixel L0 gates (Li & Ji, arXiv:1908.08988).

        nice = NICE(classifier, NICEConfig(lam=0.5)).fit(train_images)
        masks = nice.mask(test_images)          # binary (N, 1, H, W): the pixels that matter
        scores = nice.saliency(test_images)     # P(gate open), for ranking pixels

    ``classifier`` is any ``nn.Module`` from images (N, C, H, W) in the range it
    was trained on to logits (N, K); it is put in eval mode, moved to the
    config's device and never updated. Results come back on the images' device.
    """

    def __init__(self, classifier: nn.Module, config: NICEConfig | None = None):
        self.classifier = classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.config = (config or NICEConfig()).validate()
        self.device = resolve_device(self.config.device)
        self.classifier.to(self.device)
        self.estimator = make_estimator(self.config.estimator)
        self.mask_net_: MaskNetwork | None = None
        self.input_shape_: tuple[int, ...] | None = None
        self.history_: list[dict] = []

    # -- input checks -------------------------------------------------------------------------
    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(images) or images.dim() != 4:
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise GatelabError(f"images must be a tensor (N, C, H, W), got {shape}")
        if len(images) == 0:
            raise GatelabError("no images given")
        if self.input_shape_ is not None:
            if tuple(images.shape[1:]) != self.input_shape_:
                raise GatelabError(
                    f"images of shape (C, H, W) = {tuple(images.shape[1:])} do not fit: this NICE "
                    f"was fitted for {self.input_shape_}"
                )
            return images.float()
        try:
            with torch.no_grad():
                out = self.classifier(images[:1].float().to(self.device))
        except RuntimeError as exc:
            raise GatelabError(
                f"images of shape (C, H, W) = {tuple(images.shape[1:])} do not fit the classifier "
                f"({str(exc).splitlines()[0]})"
            ) from None
        if out.dim() != 2:
            raise GatelabError(f"the classifier must return logits (N, K), it returned shape {tuple(out.shape)}")
        return images.float()

    def _targets(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.config.target == "label":
            if labels is None or len(labels) != len(images):
                raise GatelabError("target='label' needs one label per image")
            return labels.long()
        return predict(self.classifier, images, batch_size=1000)

    # -- the objective ------------------------------------------------------------------------
    def _cells(self, phi: torch.Tensor) -> torch.Tensor:
        """Per-pixel parameters averaged into one gate per ``cell`` x ``cell`` block."""
        c = self.config.cell
        return phi if c == 1 else F.avg_pool2d(phi, c, ceil_mode=True)

    def _pixels(self, gates: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Cell values spread back over their pixels."""
        c = self.config.cell
        if c == 1:
            return gates
        return gates.repeat_interleave(c, 2).repeat_interleave(c, 3)[..., : like.shape[-2], : like.shape[-1]]

    def _loss(self, phi: torch.Tensor, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Data loss + L0 penalty for gate parameters ``phi`` (ARM's surrogate included), and detached statistics."""
        cfg, est = self.config, self.estimator
        fill = background(x, cfg.background, cfg.lowres_factor)
        phi = self._cells(phi)
        u = torch.rand_like(phi)
        z = self._pixels(est.sample(phi, u), x)
        data = F.cross_entropy(self.classifier(z * x + (1 - z) * fill), target, reduction="none")
        open_frac = est.prob_open(phi).mean()
        loss = data.mean() + cfg.lam * open_frac
        if est.passes == 2:  # ARM: the antithetic pass that shares u, no gradient needed
            with torch.no_grad():
                za = self._pixels(est.sample(phi, u, antithetic=True), x)
                anti = F.cross_entropy(self.classifier(za * x + (1 - za) * fill), target, reduction="none")
            shape = (-1,) + (1,) * (phi.dim() - 1)
            loss = loss + est.surrogate(phi, u, data.detach().view(shape) / len(x), anti.view(shape) / len(x))
        return loss, {"data_loss": data.mean().detach(), "open_fraction": open_frac.detach()}

    # -- fitting ------------------------------------------------------------------------------
    def fit(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        quiet: bool = False,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: float = 300.0,
        resume: str | os.PathLike | None = None,
        log_dir: str | os.PathLike | None = None,
    ) -> "NICE":
        """Train the amortised mask network on ``images`` (per-image mode needs no fitting).

        ``checkpoint`` is kept each epoch and every ``checkpoint_every`` seconds;
        ``resume`` continues from one (with one thread, exactly as if never stopped).
        The history (per epoch: data loss, fraction of open gates) is in ``history_``.
        """
        cfg = self.config
        images = self._check_images(images)
        if cfg.train_examples:
            if cfg.train_examples > len(images):
                raise GatelabError(f"train_examples {cfg.train_examples} is more than the {len(images)} images given")
            images = images[: cfg.train_examples]
            labels = labels[: cfg.train_examples] if labels is not None else None
        self.input_shape_ = tuple(images.shape[1:])
        if cfg.mode == "per_image":
            return self
        torch.manual_seed(cfg.seed)
        targets = self._targets(images, labels).to(self.device)
        net = MaskNetwork(images.shape[1], init_phi=self.estimator.init_phi(cfg.init_keep)).to(self.device)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)

        def step(idx: torch.Tensor) -> dict[str, torch.Tensor]:
            x = images[idx].to(self.device)
            loss, stats = self._loss(net(x), x, targets[idx.to(self.device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return stats

        def epoch_start(epoch: int) -> None:
            if epoch == cfg.lr_drop_epoch:
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr / 10

        self.history_ = train_epochs(
            "nice-masks",
            cfg,
            net,
            optimizer,
            len(images),
            step,
            epoch_start=epoch_start,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            resume=resume,
            quiet=quiet,
            log_dir=log_dir,
            desc="NICE masks",
        )
        self.mask_net_ = net.eval()
        return self

    def _per_image(self, images: torch.Tensor, batch_size: int, quiet: bool, checkpoint, checkpoint_every, resume):
        """Per-image mode: Adam on one gate parameter per pixel, ``steps`` steps for each batch of images.

        The checkpoint holds the finished batches' parameters, the current batch's
        parameters and optimiser, the position and the RNG state; it is tied to
        these very images (by a digest), so ``resume`` refuses other images.
        """
        cfg = self.config
        batches = images.split(batch_size)
        digest = hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        run = {**asdict(cfg), "images": digest, "batch_size": batch_size}
        pos: dict = {"batch": 0, "step": 0, "done": [], "phi": None, "optimizer": None}
        live: dict = {}

        def state() -> dict:
            return {
                "format": "nice-per-image",
                "config": run,
                "rng": rng_state(),
                **pos,
                **({"phi": live["phi"].detach(), "optimizer": live["optimizer"].state_dict()} if live else {}),
            }

        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            if resume is not None:
                saved = load_state(resume, "per-image mask checkpoint")
                check_resumable(saved, "nice-per-image", run, resume, may_differ=("device",))
                pos = {k: saved[k] for k in pos}
                set_rng_state(saved["rng"])
            done = pos["batch"] * cfg.steps + pos["step"]
            progress = bar(len(batches) * cfg.steps, "NICE per-image masks", "step", quiet, initial=done)
            with Checkpointer(checkpoint, checkpoint_every) as ckpt, progress:
                while pos["batch"] < len(batches):
                    x = batches[pos["batch"]].to(self.device)
                    target = self._targets(x, None).to(self.device)
                    start = (
                        pos["phi"]
                        if pos["phi"] is not None
                        else torch.full((len(x), 1, *x.shape[2:]), self.estimator.init_phi(cfg.init_keep))
                    )
                    phi = start.to(self.device).requires_grad_(True)
                    optimizer = torch.optim.Adam([phi], lr=0.05)
                    if pos["optimizer"] is not None:
                        optimizer.load_state_dict(pos["optimizer"])
                    live.update(phi=phi, optimizer=optimizer)
                    while pos["step"] < cfg.steps:
                        # the per-image loss sums over images so that each image's gates see the usual scale
                        loss, _ = self._loss(phi, x, target)
                        optimizer.zero_grad(set_to_none=True)
                        (loss * len(x)).backward()
                        optimizer.step()
                        self.estimator.constrain_(phi)
                        pos["step"] += 1
                        progress.update()
                        ckpt.step(state)
                    live.clear()
                    pos["done"].append(phi.detach().to(images.device))
                    pos.update(batch=pos["batch"] + 1, step=0, phi=None, optimizer=None)
                    ckpt.epoch_end(state)
        return torch.cat(pos["done"])

    # -- using a fitted NICE ------------------------------------------------------------------
    def gate_parameters(
        self,
        images: torch.Tensor,
        batch_size: int = 500,
        *,
        quiet: bool = True,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: float = 300.0,
        resume: str | os.PathLike | None = None,
    ) -> torch.Tensor:
        """Per-pixel gate parameters (N, 1, H, W) for ``images``.

        Per-image mode optimises them (seeded by the config, so every call gives the
        same result); it keeps ``checkpoint`` after each batch and every
        ``checkpoint_every`` seconds, and continues from ``resume``.
        """
        images = self._check_images(images)
        if self.config.mode == "per_image":
            if self.input_shape_ is None:
                self.input_shape_ = tuple(images.shape[1:])
            return self._per_image(images, batch_size, quiet, checkpoint, checkpoint_every, resume)
        if self.mask_net_ is None:
            raise GatelabError("this NICE is not fitted yet; call fit(images) first")
        with torch.no_grad():
            return torch.cat([self.mask_net_(b.to(self.device)).to(images.device) for b in images.split(batch_size)])

    def saliency(self, images: torch.Tensor) -> torch.Tensor:
        """P(gate open) per pixel, in [0, 1]: a continuous explanation map."""
        return self.explain(images)[1]

    def mask(self, images: torch.Tensor) -> torch.Tensor:
        """The deterministic test-time gates, binarised: 1 where a pixel keeps full value."""
        return self.explain(images)[0]

    def explain(self, images: torch.Tensor, **kw) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask, saliency)`` from one computation of the gate parameters (per-image mode optimises once).

        ``kw`` goes to ``gate_parameters`` (a per-image run's ``checkpoint``, ``resume``, ``quiet``).
        """
        phi = self.gate_parameters(images, **kw)
        cells = self._cells(phi)
        mask = self._pixels((self.estimator.deterministic(cells) > 0).float(), phi)
        return mask, self._pixels(self.estimator.prob_open(cells), phi)

    # -- files --------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """The mask network (safetensors) with the config, input shape and history in its metadata."""
        if self.mask_net_ is None:
            raise GatelabError("only a fitted amortised NICE can be saved; per-image masks have no network")
        meta = {"nice_config": asdict(self.config), "input_shape": list(self.input_shape_), "history": self.history_}
        return save_weights(self.mask_net_, path, meta)

    @classmethod
    def load(cls, path, classifier: nn.Module, device: str = "cpu") -> "NICE":
        """A fitted NICE from ``save``, explaining ``classifier``, run on ``device``."""
        what = "NICE mask network"
        meta, tensors = read_weights(path, what)
        config = config_from(NICEConfig, meta.get("nice_config"), path, what)
        shape, history = meta.get("input_shape"), meta.get("history", [])
        if not (
            isinstance(shape, list)
            and len(shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65536 for v in shape)
            and shape[0] in (1, 3)
        ):
            raise GatelabError(f"{path}: input_shape {shape!r} is not [C, H, W] with C 1 or 3 and positive H, W")
        if not isinstance(history, list):
            raise GatelabError(f"{path}: history is not a list")
        config.device = device
        nice = cls(classifier, config)
        nice.input_shape_ = tuple(shape)
        nice.history_ = history
        net = load_weights(MaskNetwork(shape[0]), tensors, path, what)
        nice.mask_net_ = net.to(nice.device).eval()
        return nice
