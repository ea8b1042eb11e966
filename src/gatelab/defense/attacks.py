"""The attacks of Defense-VAE, as a thin adapter over torchattacks 3.5.1.

The paper's attacks (FGSM, RAND+FGSM, CW-L2 with its fixed settings) and the adaptive ones a user needs beside them
(Madry's PGD, EOT-PGD) come from torchattacks; this module adds only input validation, the paper's settings, the
random step of RAND+FGSM and :class:`SoftmaxOutput`, on which ``cw_softmax`` runs torchattacks.CW. torchattacks is
imported inside the functions, so the rest of gatelab never needs it.

Two CWs: ``cw`` is CW-L2 as designed, its margin on the classifier's logits. ``cw_softmax`` is "CW as the authors
ran it (softmax margin)": the released code hands cleverhans 2.1's CarliniWagnerL2 a model of its own class, whose
call returns softmax probabilities, and cleverhans takes that output for logits, so the margin is p_y − max_{j≠y} p_j.
Once the softmax saturates that margin has no gradient left, and CW leaves the image (nearly) as it is; the more
confident the classifier, the more images CW spares, which the mode-1 accuracy under this attack reflects.

All attacks take images (N, C, H, W) in [0, 1] and integer labels (N,), and return detached adversarial images of the
same shape. torchattacks puts the model in eval mode during an attack and restores training mode afterwards.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gatelab.errors import GatelabError, check_choice

ATTACKS = ("fgsm", "rand_fgsm", "cw", "cw_softmax", "pgd", "eot_pgd")
"""Accepted attack names."""

RAND_FGSM_ALPHA = 0.05
"""Size of the random sign step that RAND+FGSM takes before its FGSM step (the paper's and Defense-GAN's value)."""

CW_LR = {0.2: 6.0, 0.25: 8.0, 0.3: 10.0, 0.35: 12.0}
"""CW-L2 learning rate per "ε" label, as in the released Defense-VAE code. CW-L2 is not an ε-ball attack: its ε is
only the name of a setting, and this table is what the name means."""

CW_C = 100.0
"""The paper's initial constant c of CW-L2 (weight of the misclassification term against the L2 distance)."""

CW_STEPS = 100
"""Iterations of CW-L2's Adam optimisation, as in the paper."""

PGD_STEPS = 40
PGD_ALPHA = 0.01
"""Madry et al.'s MNIST PGD: 40 steps of 0.01 in L∞, from a uniform random start in the ε ball."""

INSTALL = "pip install --no-deps torchattacks==3.5.1"


def _torchattacks():
    """Import torchattacks, or say how to install it (without its declared torchvision, which breaks beside torch)."""
    try:
        import torchattacks
    except ImportError as err:
        raise GatelabError(
            f"the defense attacks need torchattacks, which is not installed ({err}); install it with `{INSTALL}` "
            "(--no-deps: its declared torchvision and requests pins are not used by its code and torchvision from "
            "PyPI does not import beside the pinned torch)"
        ) from None
    return torchattacks


def check_eps(eps: float) -> float:
    """Return ``eps`` as a float if it is a finite number in [0, 1] (images live in [0, 1]), else raise."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps <= 1.0:
        raise GatelabError(f"attack eps must be a number in [0, 1] (images are in [0, 1]); got {eps!r}")
    return float(eps)


def check_images(x: torch.Tensor) -> torch.Tensor:
    """Raise unless ``x`` is a non-empty floating tensor (N, C, H, W) with every value in [0, 1]."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise GatelabError(f"images must be a floating-point tensor (N, C, H, W) in [0, 1]; got {type(x).__name__}")
    if x.dim() != 4 or x.shape[0] == 0:
        raise GatelabError(f"images must have shape (N, C, H, W) with N >= 1; got {tuple(x.shape)}")
    if not bool(((x >= 0) & (x <= 1)).all()):
        lo, hi = float(x.min()), float(x.max())
        raise GatelabError(f"images must lie in [0, 1] (and not be NaN); got values from {lo} to {hi}")
    return x


def check_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Raise unless ``model(x)`` is (N, classes) and ``y`` holds N labels in [0, classes); return the class count.

    The probe runs in eval mode without gradients, so that it does not move BatchNorm statistics.
    """
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise GatelabError(f"labels must be an int64 tensor of shape ({x.shape[0]},), one per image; got {shape}")
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        model.train(training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise GatelabError(
            f"the classifier must return logits of shape (N, classes) = ({x.shape[0]}, >=2) for {x.shape[0]} images; "
            f"got {shape}"
        )
    classes = out.shape[1]
    if bool(((y < 0) | (y >= classes)).any()):
        raise GatelabError(f"labels must lie in [0, {classes}) for a classifier with {classes} outputs")
    return classes


def cw_lr(eps: float) -> float:
    """The CW-L2 learning rate the paper ties to the "ε" label ``eps``."""
    for label, lr in CW_LR.items():
        if math.isclose(eps, label):
            return lr
    raise GatelabError(
        f"CW-L2 has a learning rate only for the eps labels {', '.join(map(str, CW_LR))}; got {eps}; "
        "pass lr= to choose one yourself"
    )


class SoftmaxOutput(nn.Module):
    """``model`` with a softmax on its outputs: probabilities where torchattacks expects logits, so that
    torchattacks.CW computes the authors' margin (``cw_softmax``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).softmax(1)


def library_attack(model: nn.Module, name: str, eps: float, **kw):
    """The configured torchattacks object for ``name`` (not ``rand_fgsm``, which is FGSM after a random step).

    Mapping to torchattacks parameters:
      - fgsm: ``FGSM(eps)``.
      - cw: ``CW(c=100, kappa=0, steps=100, lr=CW_LR[eps])``. ``c`` is the paper's initial constant, ``steps`` its
        100 iterations, ``lr`` the Adam learning rate tied to the ε label (or ``lr=`` given). torchattacks.CW has no
        binary search over c: it runs once with the given c, which is the paper's setting of one binary-search step.
        It also stops early when the loss stops falling (checked every steps // 10 iterations).
      - cw_softmax: the same ``CW`` with the same settings, on :class:`SoftmaxOutput` of ``model``: CW as the authors
        ran it (softmax margin). Other differences from cleverhans 2.1 remain (torchattacks' arctanh(2x − 1) keeps
        pixels at exactly 0 or 1 fixed, where cleverhans scales by 0.999999; its L2 term starts at ~1e-15 after the
        round trip through tanh space, not at 0, and Adam scales that gradient up to full steps, so some saturated
        images move where cleverhans leaves them; torch's Adam; no batch-128 early abort; the true label attacked,
        not the predicted one).
      - pgd: ``PGD(eps, alpha=0.01, steps=40, random_start=True)`` (Madry et al.); ``alpha``/``steps`` override.
      - eot_pgd: ``EOTPGD(eps, alpha=0.01, steps=40, eot_iter=10, random_start=True)``: the gradient is summed over
        ``eot_iter`` forward passes, for a purifier that samples. torchattacks runs the model in eval mode, so the
        model must sample in eval mode for EOT to matter.
    """
    check_choice("attack", name, ATTACKS)
    eps = check_eps(eps)
    if name == "rand_fgsm":
        raise GatelabError("rand_fgsm is FGSM after a random step, not one torchattacks attack; call attack() for it")
    ta = _torchattacks()
    if name == "fgsm":
        cls, params = ta.FGSM, {"eps": eps}
    elif name in ("cw", "cw_softmax"):
        # the wrapper takes the classifier's mode: torchattacks puts the model back into training mode after the
        # attack if it found it there, and a fresh nn.Module starts in training mode, so an untouched wrapper left an
        # eval-mode classifier in training mode (dropout on) for whatever ran after the attack
        model = SoftmaxOutput(model).train(model.training) if name == "cw_softmax" else model
        cls, params = ta.CW, {"c": CW_C, "kappa": 0.0, "steps": CW_STEPS, "lr": kw.pop("lr", None)}
        params["lr"] = cw_lr(eps) if params["lr"] is None else params["lr"]
    elif name == "pgd":
        cls, params = ta.PGD, {"eps": eps, "alpha": PGD_ALPHA, "steps": PGD_STEPS, "random_start": True}
    else:
        cls = ta.EOTPGD
        params = {"eps": eps, "alpha": PGD_ALPHA, "steps": PGD_STEPS, "eot_iter": 10, "random_start": True}
    unknown = sorted(set(kw) - set(params))
    if unknown:
        raise GatelabError(f"{name} takes no setting {', '.join(unknown)}; accepted: {', '.join(sorted(params))}")
    return cls(model, **{**params, **kw})


def rand_fgsm_start(x: torch.Tensor, alpha: float = RAND_FGSM_ALPHA, seed: int = 0) -> torch.Tensor:
    """RAND+FGSM's random step: clip(x + alpha·sign(N(0, 1)), 0, 1), drawn from a generator seeded with ``seed``."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return (x + alpha * noise.sign()).clamp(0.0, 1.0)


def attack(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str, eps: float, seed: int | None = 0, **kw
) -> torch.Tensor:
    """Adversarial versions of images ``x`` (labels ``y``) against ``model`` by attack ``name`` at ``eps``.

    ``name`` is one of :data:`ATTACKS`. ``rand_fgsm`` is RAND+FGSM: :func:`rand_fgsm_start` with α = 0.05, then FGSM
    with ε − α from there (so it needs ε ≥ α and stays in the ε ball). ``seed`` fixes the random step of rand_fgsm and
    the random start of pgd/eot_pgd (``None``: the global torch RNG). ``kw`` goes to :func:`library_attack`.
    """
    check_choice("attack", name, ATTACKS)
    eps = check_eps(eps)
    check_images(x)
    check_model(model, x, y)
    if name == "rand_fgsm":
        alpha = kw.pop("alpha", RAND_FGSM_ALPHA)
        if not 0.0 <= alpha <= eps:
            raise GatelabError(f"rand_fgsm takes a random step of {alpha} first, so it needs eps >= {alpha}; got {eps}")
        start = rand_fgsm_start(x, alpha, 0 if seed is None else seed)
        return _run(library_attack(model, "fgsm", eps - alpha, **kw), start, y)
    atk = library_attack(model, name, eps, **kw)
    if seed is None or name not in ("pgd", "eot_pgd"):
        return _run(atk, x, y)
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _run(atk, x, y)


def _run(atk, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Run a torchattacks object on the images' device (it would guess it from the model's parameters)."""
    atk.set_device(x.device)
    return atk(x, y).detach()
