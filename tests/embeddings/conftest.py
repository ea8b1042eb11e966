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


def group_margin(kv, vocab):
    u = kv.unit_vectors()
    idx = [[kv.key_to_index[w] for w in g] for g in vocab]
    within, across = [], []
    for gi, g in enumerate(idx):
        sims = u[g] @ u[g].T
        within.append(sims[~np.eye(len(g), dtype=bool)].mean())
        other = [i for gj, h in enumerate(idx) if gj != gi for i in h]
        across.append((u[g] @ u[other].T).mean())
    return float(np.mean(within)), float(np.mean(across))


@pytest.fixture(scope="session")
def planted():
    return planted_sentences()


@pytest.fixture(scope="session")
def data():
    root = data_dir()
    if not (root / "word-eval").is_dir():
        pytest.skip(f"shared data not found under {root}; set GATELAB_DATA")
    return root
