"""L0 gates: sparsify any PyTorch model with stochastic binary gates, train it, export it smaller.

    model = sparsify(lenet5_caffe(), granularity="structured", estimator="arm", lam=0.1)
    train_step(model, x, y, optimizer, dataset_size=60000)   # handles ARM's second pass
    print(summary(model)); small = export(model)

Estimators: ARM and AR (Li & Ji, L0-ARM, arXiv:1904.04432), hard concrete
(Louizos et al., arXiv:1712.01312) and a straight-through reference.
"""

from gatelab.gates.api import (
    GRANULARITIES,
    GateConfig,
    expected_l0,
    expected_l2,
    gates,
    l0_penalty,
    per_layer,
    regularizer,
    resample,
    soft_gates,
    sparsify,
    train_step,
    undecided_gates,
)
from gatelab.gates.compact import compact_forward, compactable
from gatelab.gates.estimators import ESTIMATORS, GATE_FUNCTIONS, make_estimator
from gatelab.gates.export import Summary, bake, export, summary
from gatelab.gates.gate import Gate
from gatelab.gates.models import MODELS, SmallResNet, authors_init_, build_model, lenet5_caffe, mlp
from gatelab.gates.train import PAPER_KEEP_PROB, PAPER_LAMBDA, PAPER_WEIGHT_DECAY

__all__ = [
    "sparsify",
    "train_step",
    "l0_penalty",
    "per_layer",
    "expected_l0",
    "expected_l2",
    "regularizer",
    "gates",
    "soft_gates",
    "undecided_gates",
    "resample",
    "compact_forward",
    "compactable",
    "summary",
    "export",
    "bake",
    "Summary",
    "Gate",
    "GateConfig",
    "make_estimator",
    "GRANULARITIES",
    "ESTIMATORS",
    "GATE_FUNCTIONS",
    "MODELS",
    "authors_init_",
    "build_model",
    "mlp",
    "lenet5_caffe",
    "SmallResNet",
    "PAPER_LAMBDA",
    "PAPER_WEIGHT_DECAY",
    "PAPER_KEEP_PROB",
]
