"""Neural Plasticity Networks (Li & Ji, arXiv:1908.08118): grow or shrink a network with one parameter k.

    model = make_plastic(mlp(), init_active=0.1, k=7.0, lam=0.1)     # start from a tenth of the units
    log = train_plastic(model, (x, y), (xv, yv), epochs=60, expand_fill=0.1, harden=True,
                        schedule=KSchedule(k=7.0, plastic_from=10, harden_from=50),
                        checkpoint="npn.pt")   # resume="npn.pt" continues an interrupted run
    small = gatelab.gates.export(model)

k = 0 is dropout, a moderate k is plasticity, k -> infinity is ordinary training.
"""

from gatelab.npn.plasticity import (
    AUTHORS_LOGITS,
    K_HARD,
    LOGITS_K,
    SYMMETRIC_LOGITS,
    KSchedule,
    PlasticityLog,
    active_units,
    make_plastic,
    set_k,
    train_plastic,
)

__all__ = [
    "AUTHORS_LOGITS",
    "LOGITS_K",
    "SYMMETRIC_LOGITS",
    "KSchedule",
    "PlasticityLog",
    "make_plastic",
    "train_plastic",
    "set_k",
    "active_units",
    "K_HARD",
]
