"""Classifiers A-E: output shapes, the TF padding arithmetic, parameter counts, dropout keep rates, bad input."""

import pytest
import torch
from torch import nn

from gatelab.defense import KEEP, classifier, same_padding
from gatelab.errors import GatelabError


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def conv(cin, cout, k):
    return cin * cout * k * k + cout


def fc(nin, nout):
    return nin * nout + nout


# Flattened widths worked out by hand: A and C end in 64 x 12 x 12 (28 SAME -> 28, 5x5 s2 VALID -> 12),
# B in 128 x 1 x 1 (8x8 s2 SAME -> 14, 6x6 s2 VALID -> 5, 5x5 s1 VALID -> 1), D and E read the 784 pixels.
PARAMETERS = {
    "A": conv(1, 64, 5) + conv(64, 64, 5) + fc(9216, 128) + fc(128, 10),
    "B": conv(1, 64, 8) + conv(64, 128, 6) + conv(128, 128, 5) + fc(128, 10),
    "C": conv(1, 128, 3) + conv(128, 64, 5) + fc(9216, 128) + fc(128, 10),
    "D": fc(784, 200) + fc(200, 200) + fc(200, 10),
    "E": fc(784, 200) + fc(200, 200) + fc(200, 10),
}
FLAT = {"A": 9216, "B": 128, "C": 9216, "D": 784, "E": 784}


@pytest.mark.parametrize("name", "ABCDE")
def test_shapes_widths_and_parameter_counts(name):
    torch.manual_seed(0)
    net = classifier(name).eval()
    x = torch.rand(3, 1, 28, 28)
    logits = net(x)
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    assert sum(p.numel() for p in net.parameters()) == PARAMETERS[name]
    flatten = [i for i, m in enumerate(net.net) if isinstance(m, nn.Flatten)][0]
    assert net.net[: flatten + 1](x).shape == (3, FLAT[name])
    # eval mode is deterministic (dropout off), and each image's logits do not depend on the rest of the batch
    torch.testing.assert_close(net(x[:1]), logits[:1], rtol=1e-5, atol=1e-5)


def test_tf_same_padding():
    assert same_padding(28, 5, 1) == 2  # model A's first convolution
    assert same_padding(28, 8, 2) == 3  # model B's: 14 outputs, (14 - 1) * 2 + 8 - 28 = 6 pixels in total
    assert same_padding(28, 3, 1) == 1  # model C's
    with pytest.raises(GatelabError, match="asymmetric"):
        same_padding(28, 4, 1)  # 3 pixels: TF would put 1 before and 2 after


@pytest.mark.parametrize("name", "ABCDE")
def test_dropout_rates_are_one_minus_the_released_keep_probabilities(name):
    drops = [m.p for m in classifier(name).modules() if isinstance(m, nn.Dropout)]
    assert drops == pytest.approx([1 - keep for keep in KEEP[name]])
    assert len(drops) == {"A": 2, "B": 2, "C": 2, "D": 1, "E": 0}[name]


def test_dropout_is_active_in_training_mode():
    torch.manual_seed(0)
    net = classifier("B").train()
    x = torch.rand(4, 1, 28, 28)
    assert not torch.equal(net(x), net(x))


@pytest.mark.parametrize("bad", ["F", "a", "", None])
def test_unknown_name(bad):
    with pytest.raises(GatelabError, match="accepted: A, B, C, D, E"):
        classifier(bad)


@pytest.mark.parametrize("shape", [(2, 28, 28), (2, 3, 28, 28), (2, 1, 32, 32), (0, 1, 28, 28)])
def test_wrong_image_shape(shape):
    with pytest.raises(GatelabError, match=r"\(N, 1, 28, 28\)"):
        classifier("A")(torch.rand(shape))
