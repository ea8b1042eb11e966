"""ESVI: asynchronous, lock-free distributed variational inference for mixture models (Zhang et al., AISTATS 2019).

``LDAVI`` (latent Dirichlet allocation) and ``GaussianMixtureVI`` (a Gaussian
mixture with Normal–Gamma components and Dirichlet weights) fit by batch VI,
SVI, bulk-synchronous distributed VI or ESVI (``algorithm=``), with ESVI-TOPK
(``topk=``). Launch several processes with ``torchrun``; each passes its own
shard of the data to ``fit``.
"""

from gatelab.data.bow import BagOfWords, read_docword, read_vocab, uci_paths
from gatelab.vi.base import ALGORITHMS, ESVI_UPDATES, dirichlet_expectation, learning_rate
from gatelab.vi.gmm import GaussianMixtureVI
from gatelab.vi.lda import LDAVI, completion_split
from gatelab.vi.synthetic import synthetic_gmm, synthetic_lda

__all__ = [
    "ALGORITHMS",
    "ESVI_UPDATES",
    "BagOfWords",
    "GaussianMixtureVI",
    "LDAVI",
    "completion_split",
    "dirichlet_expectation",
    "learning_rate",
    "read_docword",
    "read_vocab",
    "synthetic_gmm",
    "synthetic_lda",
    "uci_paths",
]
