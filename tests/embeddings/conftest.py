import numpy as np
import pytest

from gatelab.data.store import data_dir


def planted_sentences(n_sentences=3000, groups=10, per_group=8, length=12, seed=0):
    """Sentences each drawn from one group of words: words of a group share contexts."""
    rng = np.random.default_rng(seed)
    vocab = [[f"g{g}w{i}" for i in range(per_group)] for g in range(groups)]
    out = []
    for _ in range(n_sentences):
        g = rng.integers(groups)
        out.append([vocab[g][i] for i in rng.integers(per_group, size=length)])
    return out, vocab


@pytest.fixture(scope="session")
def planted():
    return planted_sentences()


@pytest.fixture(scope="session")
def data():
    root = data_dir()
    if not (root / "word-eval").is_dir():
        pytest.skip(f"shared data not found under {root}; set GATELAB_DATA")
    return root
