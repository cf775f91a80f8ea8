"""Weight initialisation from the course notes.

``normal``: N(0,1)·0.01 (the notes' first attempt — it makes deep nets' signals vanish),
``xavier``: N(0,1)·√(1/n_in) (keeps variance for tanh/sigmoid),
``he``: N(0,1)·√(2/n_in) (keeps variance for ReLU). Biases start at zero.
Weights are drawn on the CPU with NumPy's seeded generator so a seed means the same
network on every device.
"""

from __future__ import annotations

import math

import numpy as np

from xpnet import choices
from xpnet.errors import ConfigError

NAMES = choices.INITS


def weight_scale(init: str, n_in: int) -> float:
    """The standard deviation each init uses for a layer with ``n_in`` inputs."""
    key = str(init).lower()
    if key == "normal":
        return 0.01
    if key == "xavier":
        return math.sqrt(1.0 / n_in)
    if key == "he":
        return math.sqrt(2.0 / n_in)
    raise ConfigError(f"unknown init {init!r}: choose one of {', '.join(NAMES)}")


def init_weights(sizes, init: str, rng: np.random.Generator, dtype) -> list[np.ndarray]:
    """``[W0, b0, W1, b1, ...]`` as NumPy arrays, ``W[l]`` of shape (n_out, n_in)."""
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        scale = weight_scale(init, n_in)
        params.append((rng.standard_normal((n_out, n_in)) * scale).astype(dtype))
        params.append(np.zeros(n_out, dtype=dtype))
    return params
