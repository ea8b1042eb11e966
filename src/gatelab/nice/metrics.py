"""How good is a saliency map?  Baseline attributions and faithfulness metrics.

NICE explains a classifier with learned per-pixel gates.  To compare those
masks with the usual explanations this module provides

* :func:`attribute`: gradient saliency, integrated gradients and occlusion,
  computed by Captum (not reimplemented here), reduced to one map per image;
* :func:`deletion_insertion`: the deletion and insertion curves of RISE
  (Petsiuk et al., 2018) and their areas;
* :func:`keep_top_accuracy`: accuracy when only the most salient pixels are kept;
* :func:`compare`: all of the above for several saliency maps plus a random
  control, and :func:`plot_curves` to draw the curves.

Conventions: images are ``(N, C, H, W)`` floats, not normalised, and pixel value
0 is the "removed" reference unless another reference is given.  A saliency map
is ``(N, 1, H, W)`` or ``(N, H, W)``; larger means more important.  Pixels with
equal saliency are ranked in raster order (a stable sort), so a binary mask is a
valid saliency map and the results are deterministic.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatelab.errors import GatelabError, check_choice
from gatelab.files import atomic_path

__all__ = [
    "BASELINES",
    "CurveResult",
    "attribute",
    "blur",
    "compare",
    "deletion_insertion",
    "keep_top_accuracy",
    "plot_curves",
    "reference_images",
]

#: The attribution methods :func:`attribute` computes through Captum.
BASELINES: dict[str, str] = {
    "saliency": "gradient saliency (Simonyan et al. 2014): |d logit / d pixel|, captum.attr.Saliency",
    "integrated_gradients": "integrated gradients (Sundararajan et al. 2017) from a black image, "
    "captum.attr.IntegratedGradients",
    "occlusion": "occlusion (Zeiler & Fergus 2014): drop of the target logit when a patch is set to 0, "
    "captum.attr.Occlusion",
}

#: What ``reference`` may be: a named reference, a constant, or an image tensor.
Reference = str | float | Tensor
REFERENCES = ("zeros", "blur")


# ----------------------------------------------------------------------------- validation


def _check_images(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor):
        raise GatelabError(f"images must be a torch.Tensor of shape (N, C, H, W); got {type(images).__name__}")
    if images.dim() != 4 or min(images.shape) < 1:
        raise GatelabError(f"images must have shape (N, C, H, W) with every size >= 1; got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise GatelabError(f"images must be floating point (values in [0, 1]); got dtype {images.dtype}")
    return images


def _check_targets(targets, n: int) -> Tensor:
    targets = torch.as_tensor(targets)
    if targets.dtype == torch.bool or targets.is_floating_point() or targets.is_complex():
        raise GatelabError(f"targets must be integer class indices; got dtype {targets.dtype}")
    if targets.dim() != 1 or targets.shape[0] != n:
        raise GatelabError(f"targets must have shape ({n},), one class index per image; got {tuple(targets.shape)}")
    if n and int(targets.min()) < 0:
        raise GatelabError(f"targets must be class indices >= 0; got {int(targets.min())}")
    return targets.long()


def _check_saliency(saliency, images: Tensor) -> Tensor:
    n, _, h, w = images.shape
    if not isinstance(saliency, Tensor):
        raise GatelabError(
            f"saliency must be a torch.Tensor of shape ({n}, 1, {h}, {w}) or ({n}, {h}, {w}); "
            f"got {type(saliency).__name__}"
        )
    if saliency.dim() == 3:
        saliency = saliency.unsqueeze(1)
    if tuple(saliency.shape) != (n, 1, h, w):
        raise GatelabError(
            f"saliency must have shape ({n}, 1, {h}, {w}) or ({n}, {h}, {w}) to match the images; "
            f"got {tuple(saliency.shape)}"
        )
    saliency = saliency.detach().float()
    if not torch.isfinite(saliency).all():
        raise GatelabError("saliency contains NaN or infinite values; accepted: finite numbers")
    return saliency


def _check_positive_int(what: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GatelabError(f"{what} must be an integer >= 1; got {value!r}")
    return value


def _device_of(classifier: nn.Module, images: Tensor) -> torch.device:
    if not isinstance(classifier, nn.Module):
        raise GatelabError(
            f"classifier must be a torch.nn.Module returning logits (N, K); got {type(classifier).__name__}"
        )
    param = next(classifier.parameters(), None)
    return param.device if param is not None else images.device


@contextlib.contextmanager
def _eval_mode(classifier: nn.Module) -> Iterator[nn.Module]:
    """Put ``classifier`` in eval mode for the block and restore its training flags afterwards."""
    modes = [(m, m.training) for m in classifier.modules()]
    classifier.eval()
    try:
        yield classifier
    finally:
        for module, training in modes:
            module.training = training


def _logits(classifier: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    """``classifier(x)``, checked to be logits (B, K) for which ``targets`` are valid classes."""
    logits = classifier(x)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise GatelabError(f"classifier must return logits of shape (N, K); got {shape} for {x.shape[0]} images")
    if int(targets.max()) >= logits.shape[1]:
        raise GatelabError(f"targets must be class indices in [0, {logits.shape[1]}); got {int(targets.max())}")
    return logits


def _target_probability(classifier: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    """Softmax probability of ``targets`` under ``classifier`` for a batch ``x``."""
    return _logits(classifier, x, targets).float().softmax(dim=1).gather(1, targets[:, None]).squeeze(1)


# ----------------------------------------------------------------------------- baselines


def attribute(
    classifier: nn.Module,
    images: Tensor,
    targets,
    method: str = "saliency",
    *,
    batch_size: int = 256,
    n_steps: int = 50,
    internal_batch_size: int | None = None,
    window: int = 4,
    stride: int = 2,
    absolute: bool = False,
) -> Tensor:
    """Attribution map ``(N, 1, H, W)`` of ``classifier``'s logit for ``targets``, by a Captum method.

    ``method`` is one of :data:`BASELINES`:

    * ``"saliency"``: ``captum.attr.Saliency`` with ``abs=True``; channels are
      reduced by summing ``|gradient|`` (the method's convention is a magnitude).
    * ``"integrated_gradients"``: ``captum.attr.IntegratedGradients`` from an
      all-zero baseline with ``n_steps`` points, ``internal_batch_size`` of them
      per forward (default ``batch_size``); channels are summed with their
      sign, because a negative attribution is evidence against the class.
    * ``"occlusion"``: ``captum.attr.Occlusion`` with ``window`` x ``window``
      patches (over all channels at once) moved by ``stride`` and set to 0
      (4 and 2 suit 28 x 28 images); the patch covers every channel, so each
      channel carries the same value and the map is their mean, signed.

    ``absolute=True`` takes the magnitude of the signed maps as well.  The
    classifier is run in eval mode (its flags are restored afterwards) on
    ``batch_size`` images at a time.
    """
    check_choice("attribution method", method, BASELINES)
    images = _check_images(images)
    targets = _check_targets(targets, images.shape[0])
    batch_size = _check_positive_int("batch_size", batch_size)
    try:
        from captum import attr as captum_attr
    except ImportError as exc:  # pragma: no cover - captum is a declared dependency
        raise ImportError("gatelab.nice.metrics.attribute needs captum: pip install captum") from exc

    channels = images.shape[1]
    if method == "integrated_gradients":
        _check_positive_int("n_steps", n_steps)
        internal = _check_positive_int("internal_batch_size", internal_batch_size or batch_size)
    if method == "occlusion":
        _check_positive_int("window", window)
        _check_positive_int("stride", stride)
        if window > min(images.shape[2:]):
            raise GatelabError(f"window must be at most the image size {tuple(images.shape[2:])}; got {window}")

    device = _device_of(classifier, images)
    out = []
    with _eval_mode(classifier):
        for start in range(0, images.shape[0], batch_size):
            # A leaf that requires grad: the gradient methods need it, and Captum warns when it sets it itself.
            x = images[start : start + batch_size].detach().to(device).requires_grad_(method != "occlusion")
            t = targets[start : start + batch_size].to(device)
            if method == "saliency":
                a = captum_attr.Saliency(classifier).attribute(x, target=t, abs=True)
                a = a.sum(dim=1, keepdim=True)
            elif method == "integrated_gradients":
                a = captum_attr.IntegratedGradients(classifier).attribute(
                    x, baselines=torch.zeros_like(x), target=t, n_steps=n_steps, internal_batch_size=internal
                )
                a = a.sum(dim=1, keepdim=True)
            else:
                a = captum_attr.Occlusion(classifier).attribute(
                    x,
                    sliding_window_shapes=(channels, window, window),
                    strides=(channels, stride, stride),
                    baselines=0.0,
                    target=t,
                    perturbations_per_eval=max(1, batch_size // x.shape[0]),
                )
                a = a.mean(dim=1, keepdim=True)
            if absolute:
                a = a.abs()
            out.append(a.detach().to(images.device))
    return torch.cat(out)


# ----------------------------------------------------------------------------- references


def blur(images: Tensor, sigma: float = 5.0) -> Tensor:
    """Gaussian blur of ``images`` (N, C, H, W), the insertion reference of RISE.

    A separable kernel of radius ``ceil(2 sigma)``, normalised to sum 1, with
    replicated borders, so a constant image stays constant.
    """
    images = _check_images(images)
    if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
        raise GatelabError(f"blur sigma must be a number > 0; got {sigma!r}")
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images.dtype).to(images.device)
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def reference_images(reference: Reference, images: Tensor, blur_sigma: float = 5.0) -> Tensor:
    """The reference images (N, C, H, W) that removed pixels take: black, a blurred copy, a constant or an image."""
    if isinstance(reference, str):
        check_choice("reference", reference, REFERENCES)
        return torch.zeros_like(images) if reference == "zeros" else blur(images, blur_sigma)
    if isinstance(reference, (int, float)) and not isinstance(reference, bool):
        return torch.full_like(images, float(reference))
    if isinstance(reference, Tensor):
        try:
            return reference.detach().to(images.device, images.dtype).expand_as(images)
        except RuntimeError:
            raise GatelabError(
                f"reference tensor of shape {tuple(reference.shape)} does not broadcast to the "
                f"images {tuple(images.shape)}; accepted: (C, H, W), (1, C, H, W) or "
                f"(N, C, H, W)"
            ) from None
    raise GatelabError(
        f"reference must be one of {', '.join(REFERENCES)}, a number or an image tensor; got {type(reference).__name__}"
    )


def _ranks(saliency: Tensor) -> Tensor:
    """Rank (0 = most salient) of every pixel, ties broken by raster order; (B, 1, H, W) -> (B, H*W)."""
    flat = saliency.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


# ----------------------------------------------------------------------------- deletion / insertion


@dataclass(frozen=True)
class CurveResult:
    """Deletion and insertion curves of a set of images.

    ``fractions[k]`` is the fraction of pixels deleted (or inserted) at step k;
    ``deletion[i, k]`` and ``insertion[i, k]`` are the target-class probabilities
    of image i at that point; ``deletion_aucs`` and ``insertion_aucs`` are the
    per-image areas under them (trapezoid rule over the fractions).
    """

    fractions: Tensor
    deletion: Tensor
    insertion: Tensor
    deletion_aucs: Tensor
    insertion_aucs: Tensor

    @property
    def deletion_auc(self) -> float:
        """Mean area under the deletion curves; lower is better."""
        return float(self.deletion_aucs.mean())

    @property
    def insertion_auc(self) -> float:
        """Mean area under the insertion curves; higher is better."""
        return float(self.insertion_aucs.mean())

    def summary(self) -> dict[str, float]:
        """The mean areas, for JSON reports."""
        return {"deletion_auc": self.deletion_auc, "insertion_auc": self.insertion_auc}


def deletion_insertion(
    classifier: nn.Module,
    images: Tensor,
    targets,
    saliency: Tensor,
    *,
    steps: int = 28,
    reference: Reference = 0.0,
    insertion_reference: Reference | None = None,
    blur_sigma: float = 5.0,
    batch_size: int = 256,
) -> CurveResult:
    """Deletion and insertion curves of ``saliency`` for ``classifier`` (Petsiuk et al., RISE, 2018).

    Deletion sets pixels to ``reference``, most salient first; insertion starts
    from ``insertion_reference`` (default: ``reference``) and puts the original
    pixels back, most salient first.  The pixels go in ``steps`` nearly equal
    chunks (after step k, ``round(k H W / steps)`` pixels), and at each of the
    ``steps + 1`` points the softmax probability of the target class is
    recorded.  A faithful map makes the deletion curve fall fast (low area) and
    the insertion curve rise fast (high area).

    A reference is ``"zeros"``, ``"blur"`` (a Gaussian blur of each image with
    ``blur_sigma``, RISE's insertion start), a number, or a tensor that
    broadcasts to the images.  A pixel covers all channels.  Each step is one
    forward of at most ``batch_size`` images (deletion and insertion together).
    """
    images = _check_images(images)
    n, _, h, w = images.shape
    targets = _check_targets(targets, n)
    saliency = _check_saliency(saliency, images)
    pixels = h * w
    steps = _check_positive_int("steps", steps)
    if steps > pixels:
        raise GatelabError(f"steps must be at most the number of pixels {pixels}; got {steps}")
    batch_size = _check_positive_int("batch_size", batch_size)
    if batch_size < 2:
        raise GatelabError(f"batch_size must be >= 2 (deletion and insertion share a forward); got {batch_size}")
    del_ref = reference_images(reference, images, blur_sigma)
    ins_ref = del_ref if insertion_reference is None else reference_images(insertion_reference, images, blur_sigma)

    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * pixels / steps).long()
    fractions = counts.double().div(pixels).float()
    deletion = torch.empty(n, steps + 1)
    insertion = torch.empty(n, steps + 1)
    device = _device_of(classifier, images)
    chunk = batch_size // 2
    with _eval_mode(classifier), torch.no_grad():
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            x = images[start:stop].to(device)
            t = targets[start:stop].to(device)
            rank = _ranks(saliency[start:stop].to(device)).view(-1, 1, h, w)
            d_ref, i_ref = del_ref[start:stop].to(device), ins_ref[start:stop].to(device)
            for k, m in enumerate(counts.tolist()):
                chosen = rank < m  # the m most salient pixels
                batch = torch.cat([torch.where(chosen, d_ref, x), torch.where(chosen, x, i_ref)])
                p = _target_probability(classifier, batch, torch.cat([t, t])).cpu()
                deletion[start:stop, k] = p[: stop - start]
                insertion[start:stop, k] = p[stop - start :]
    return CurveResult(
        fractions=fractions,
        deletion=deletion,
        insertion=insertion,
        deletion_aucs=torch.trapezoid(deletion, fractions, dim=1),
        insertion_aucs=torch.trapezoid(insertion, fractions, dim=1),
    )


def keep_top_accuracy(
    classifier: nn.Module,
    images: Tensor,
    targets,
    saliency: Tensor,
    fractions: Sequence[float] = (0.05, 0.1, 0.2),
    *,
    reference: Reference = 0.0,
    blur_sigma: float = 5.0,
    batch_size: int = 256,
) -> dict[float, float]:
    """Accuracy when only the ``round(f H W)`` most salient pixels are kept, for each fraction f.

    The other pixels are set to ``reference`` (0 by default).  A map that finds
    the evidence keeps the accuracy high with few pixels: a point measure of
    sparsity and faithfulness.  Ties are ranked in raster order.
    """
    images = _check_images(images)
    n, _, h, w = images.shape
    targets = _check_targets(targets, n)
    saliency = _check_saliency(saliency, images)
    batch_size = _check_positive_int("batch_size", batch_size)
    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise GatelabError(f"fractions must be a non-empty list of numbers in [0, 1]; got {fractions}")
    ref = reference_images(reference, images, blur_sigma)
    correct = torch.zeros(len(fractions), dtype=torch.long)
    device = _device_of(classifier, images)
    with _eval_mode(classifier), torch.no_grad():
        for start in range(0, n, batch_size):
            x = images[start : start + batch_size].to(device)
            t = targets[start : start + batch_size].to(device)
            rank = _ranks(saliency[start : start + batch_size].to(device)).view(-1, 1, h, w)
            r = ref[start : start + batch_size].to(device)
            for j, f in enumerate(fractions):
                kept = torch.where(rank < round(f * h * w), x, r)
                correct[j] += int((_logits(classifier, kept, t).argmax(dim=1) == t).sum())
    return {f: float(c) / n for f, c in zip(fractions, correct.tolist())}


# ----------------------------------------------------------------------------- comparison


def compare(
    classifier: nn.Module,
    images: Tensor,
    targets,
    saliencies: Mapping[str, Tensor] | None = None,
    *,
    methods: Sequence[str] = (),
    random_control: bool = True,
    seed: int = 0,
    steps: int = 28,
    reference: Reference = 0.0,
    insertion_reference: Reference | None = None,
    fractions: Sequence[float] = (0.05, 0.1, 0.2),
    blur_sigma: float = 5.0,
    batch_size: int = 256,
    attribute_kw: Mapping[str, object] | None = None,
) -> dict[str, dict]:
    """Deletion AUC, insertion AUC and keep-top accuracies of several saliency maps at once.

    ``saliencies`` maps names (e.g. ``"nice"``) to maps; ``methods`` names
    :data:`BASELINES` to compute here with :func:`attribute` (``attribute_kw``
    passed on); ``random_control`` adds ``"random"``, uniform noise from a
    ``torch.Generator`` seeded with ``seed``, which any useful map must beat.
    Returns, per name, ``{"deletion_auc", "insertion_auc", "keep_top",
    "curves" (a CurveResult), "seconds" (time to compute the map here, or None)}``.
    """
    images = _check_images(images)
    targets = _check_targets(targets, images.shape[0])
    maps: dict[str, tuple[Tensor, float | None]] = {}
    for name, sal in (saliencies or {}).items():
        maps[str(name)] = (_check_saliency(sal, images), None)
    for method in methods:
        check_choice("attribution method", method, BASELINES)
        began = time.perf_counter()
        sal = attribute(classifier, images, targets, method, batch_size=batch_size, **dict(attribute_kw or {}))
        maps[method] = (sal, time.perf_counter() - began)
    if random_control and "random" not in maps:
        generator = torch.Generator().manual_seed(seed)
        n, _, h, w = images.shape
        maps["random"] = (torch.rand(n, 1, h, w, generator=generator), 0.0)
    if not maps:
        raise GatelabError("nothing to compare: give saliencies, methods, or random_control=True")

    results: dict[str, dict] = {}
    for name, (sal, seconds) in maps.items():
        curves = deletion_insertion(
            classifier,
            images,
            targets,
            sal,
            steps=steps,
            reference=reference,
            insertion_reference=insertion_reference,
            blur_sigma=blur_sigma,
            batch_size=batch_size,
        )
        keep = keep_top_accuracy(
            classifier,
            images,
            targets,
            sal,
            fractions,
            reference=reference,
            blur_sigma=blur_sigma,
            batch_size=batch_size,
        )
        results[name] = {
            "deletion_auc": curves.deletion_auc,
            "insertion_auc": curves.insertion_auc,
            "keep_top": keep,
            "curves": curves,
            "seconds": seconds,
        }
    return results


def plot_curves(
    result_by_name: Mapping[str, CurveResult | Mapping[str, object]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Draw the mean deletion and insertion curve of each method, with its AUC, to an image file.

    ``result_by_name`` maps names to :class:`CurveResult` or to the entries
    :func:`compare` returns.  The file (PNG unless ``path`` names another
    format matplotlib knows) is written atomically.
    """
    from matplotlib.figure import Figure

    curves: dict[str, CurveResult] = {}
    for name, value in result_by_name.items():
        if isinstance(value, Mapping):
            value = value.get("curves")
        if not isinstance(value, CurveResult):
            raise GatelabError(
                f"plot_curves needs a CurveResult (or a compare() entry) for {name!r}; got {type(value).__name__}"
            )
        curves[str(name)] = value
    if not curves:
        raise GatelabError("plot_curves needs at least one result to draw")

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_del, ax_ins = fig.subplots(1, 2, sharey=True)
    for name, c in curves.items():
        x = c.fractions.numpy()
        ax_del.plot(x, c.deletion.mean(0).numpy(), label=f"{name} (AUC {c.deletion_auc:.3f})")
        ax_ins.plot(x, c.insertion.mean(0).numpy(), label=f"{name} (AUC {c.insertion_auc:.3f})")
    ax_del.set(
        title="deletion (lower is better)",
        xlabel="fraction of pixels deleted",
        ylabel="probability of the target class",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax_ins.set(title="insertion (higher is better)", xlabel="fraction of pixels inserted", xlim=(0, 1))
    for ax in (ax_del, ax_ins):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=120)
    return path
