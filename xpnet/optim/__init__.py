"""Optimizers (SGD … AdamW, each owning its update) and learning-rate schedules.

``xpnet.optim.Adam(2e-3, schedule=xpnet.optim.schedules.OneCycle(total_steps))``.
"""

from xpnet.optim import schedules
from xpnet.optim.optimizers import (
    DEFAULT_LR,
    OPTIMIZERS,
    SGD,
    Adam,
    AdamW,
    Momentum,
    Optimizer,
    RMSProp,
    get_optimizer,
    weight_slices,
)

__all__ = ["DEFAULT_LR", "OPTIMIZERS", "SGD", "Adam", "AdamW", "Momentum", "Optimizer", "RMSProp", "get_optimizer",
           "schedules", "weight_slices"]
