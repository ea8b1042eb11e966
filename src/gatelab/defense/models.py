"""The MNIST classifiers that Defense-VAE defends: models A-D of Defense-GAN and the substitute E.

Rebuilt in PyTorch from the layer lists of Defense-GAN (``kabkabm/defensegan``, ``utils/network_builder.py``),
which Defense-VAE (``lxuniverse/defense-vae``, ``white_box/cnn_models.py``) reuses unchanged. Every model takes
images of shape (N, 1, 28, 28) with values in [0, 1] and returns logits of shape (N, 10).

Dropout rates. The released code writes ``Dropout(p)`` and runs ``tf.nn.dropout(x, p)`` under TensorFlow 1.7, whose
second positional argument is the KEEP probability (``rate=`` only arrived in TF 1.13), and it trains with
``K.learning_phase() = 1`` (``whitebox.py``), so dropout was active. The models as trained therefore KEPT 25 % / 50 %
of the units (A, C), 20 % of the input pixels and 50 % of the features (B), and 50 % (D). The numbers look like Keras
drop rates carried over from the cleverhans examples, but what ran, and what the paper's numbers come from, is the
keep reading; we reproduce that and convert to PyTorch drop rates as ``1 - keep`` (see ``KEEP``).

Padding. TensorFlow's 'SAME' pads ``max((ceil(n / s) - 1) * s + k - n, 0)`` in total, the extra pixel (if odd) at
the end; 'VALID' pads nothing. Every 'SAME' layer here has an even total, so it is a symmetric PyTorch padding
(``same_padding``). Weights use PyTorch's default initialisation, not TF's column-normalised normals.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gatelab.errors import GatelabError, check_choice

IMAGE_SHAPE = (1, 28, 28)
CLASSES = 10

# Keep probabilities exactly as written in Defense-GAN's network_builder.py (TF1 ``tf.nn.dropout(x, keep_prob)``).
KEEP = {
    "A": (0.25, 0.5),  # after flatten, after fc128
    "B": (0.2, 0.5),  # on the input pixels, after the last convolution
    "C": (0.25, 0.5),  # after flatten, after fc128
    "D": (0.5,),  # after the first fc200
    "E": (),  # the substitute has no dropout
}
NAMES = tuple(KEEP)


def same_padding(size: int, kernel: int, stride: int) -> int:
    """The per-side padding of TF's 'SAME' for a ``size``-pixel input; refuses the asymmetric cases."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    if total % 2:
        raise GatelabError(
            f"TF 'SAME' padding of {total} pixels (size {size}, kernel {kernel}, stride {stride}) is "
            "asymmetric; accepted: kernels and strides whose total padding is even"
        )
    return total // 2


def _drop(name: str, i: int) -> nn.Dropout:
    return nn.Dropout(p=1.0 - KEEP[name][i])


class Classifier(nn.Module):
    """One of models A-E as a layer stack; checks the input shape and returns logits (N, 10)."""

    def __init__(self, name: str, layers: list[nn.Module]):
        super().__init__()
        self.name = name
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE or x.shape[0] == 0:
            raise GatelabError(f"model {self.name} takes images of shape (N, 1, 28, 28), N >= 1; got {tuple(x.shape)}")
        return self.net(x)


def _model_a() -> list[nn.Module]:
    # conv64 5x5 s1 SAME -> 28x28; conv64 5x5 s2 VALID -> 12x12; 64 * 12 * 12 = 9216 features.
    return [
        nn.Conv2d(1, 64, 5, stride=1, padding=same_padding(28, 5, 1)),
        nn.ReLU(),
        nn.Conv2d(64, 64, 5, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        _drop("A", 0),
        nn.Linear(64 * 12 * 12, 128),
        nn.ReLU(),
        _drop("A", 1),
        nn.Linear(128, CLASSES),
    ]


def _model_b() -> list[nn.Module]:
    # conv64 8x8 s2 SAME -> 14x14; conv128 6x6 s2 VALID -> 5x5; conv128 5x5 s1 VALID -> 1x1; 128 features.
    return [
        _drop("B", 0),
        nn.Conv2d(1, 64, 8, stride=2, padding=same_padding(28, 8, 2)),
        nn.ReLU(),
        nn.Conv2d(64, 128, 6, stride=2),
        nn.ReLU(),
        nn.Conv2d(128, 128, 5, stride=1),
        nn.ReLU(),
        _drop("B", 1),
        nn.Flatten(),
        nn.Linear(128, CLASSES),
    ]


def _model_c() -> list[nn.Module]:
    # conv128 3x3 s1 SAME -> 28x28; conv64 5x5 s2 VALID -> 12x12; 9216 features.
    return [
        nn.Conv2d(1, 128, 3, stride=1, padding=same_padding(28, 3, 1)),
        nn.ReLU(),
        nn.Conv2d(128, 64, 5, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        _drop("C", 0),
        nn.Linear(64 * 12 * 12, 128),
        nn.ReLU(),
        _drop("C", 1),
        nn.Linear(128, CLASSES),
    ]


def _model_d() -> list[nn.Module]:
    return [
        nn.Flatten(),
        nn.Linear(28 * 28, 200),
        nn.ReLU(),
        _drop("D", 0),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, CLASSES),
    ]


def _model_e() -> list[nn.Module]:
    return [nn.Flatten(), nn.Linear(28 * 28, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, CLASSES)]


_BUILDERS = {"A": _model_a, "B": _model_b, "C": _model_c, "D": _model_d, "E": _model_e}


def classifier(name: str) -> Classifier:
    """A fresh, untrained model ``name`` (one of A, B, C, D, E; E is the black-box substitute)."""
    check_choice("classifier", name, NAMES)
    return Classifier(name, _BUILDERS[name]())
