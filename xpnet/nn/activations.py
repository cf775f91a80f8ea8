"""Hidden-layer activations from the course notes, written once against ``xp``.

Each activation is a pair ``forward(Z, out)`` / ``backward(dA, Z, A, out)`` so the model
can run on preallocated buffers; ``backward`` gets both ``Z`` and ``A`` because sigmoid and
tanh derive most cheaply from ``A`` and ReLU from ``Z``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from xpnet.backend import get_array_module
from xpnet import choices
from xpnet.errors import ConfigError


@dataclass(frozen=True)
class Activation:
    name: str
    forward: Callable
    backward: Callable
    # Whether the ReLU fused kernels (ops.bias_relu_forward / ops.relu_backward) apply.
    is_relu: bool = False


def _relu_forward(Z, out):
    return get_array_module(Z).maximum(Z, 0, out=out)


def _relu_backward(dA, Z, A, out):
    return get_array_module(Z).multiply(dA, Z > 0, out=out)


def _make_leaky(slope: float) -> Activation:
    def forward(Z, out):
        xp = get_array_module(Z)
        xp.multiply(Z, slope, out=out)
        return xp.maximum(Z, out, out=out)  # max(z, slope*z) for 0 <= slope < 1

    def backward(dA, Z, A, out):
        xp = get_array_module(Z)
        scale = (Z > 0).astype(Z.dtype)  # 1 where z > 0, slope elsewhere
        scale *= 1 - slope
        scale += slope
        return xp.multiply(dA, scale, out=out)

    return Activation("leaky_relu", forward, backward)


def _sigmoid_forward(Z, out):
    xp = get_array_module(Z)
    # 1/(1+exp(-z)) overflows harmlessly to 0 for very negative z; silence the warning.
    with _ignore_overflow(xp):
        xp.negative(Z, out=out)
        xp.exp(out, out=out)
        out += 1
        xp.reciprocal(out, out=out)
    return out


def _sigmoid_backward(dA, Z, A, out):
    # s'(z) = s(1 - s); ``out`` may be ``dA``, so form the derivative first.
    xp = get_array_module(A)
    deriv = 1 - A
    deriv *= A
    return xp.multiply(dA, deriv, out=out)


def _tanh_forward(Z, out):
    return get_array_module(Z).tanh(Z, out=out)


def _tanh_backward(dA, Z, A, out):
    # tanh'(z) = 1 - tanh²; ``out`` may be ``dA``, so form the derivative first.
    xp = get_array_module(A)
    deriv = A * A
    xp.subtract(1, deriv, out=deriv)
    return xp.multiply(dA, deriv, out=out)


def _linear_forward(Z, out):
    out[...] = Z
    return out


def _linear_backward(dA, Z, A, out):
    out[...] = dA
    return out


class _ignore_overflow:
    def __init__(self, xp):
        self.np = xp if xp.__name__ == "numpy" else None

    def __enter__(self):
        if self.np is not None:
            self._old = self.np.seterr(over="ignore")

    def __exit__(self, *exc):
        if self.np is not None:
            self.np.seterr(**self._old)


RELU = Activation("relu", _relu_forward, _relu_backward, is_relu=True)
SIGMOID = Activation("sigmoid", _sigmoid_forward, _sigmoid_backward)
TANH = Activation("tanh", _tanh_forward, _tanh_backward)
LINEAR = Activation("linear", _linear_forward, _linear_backward)

NAMES = choices.ACTIVATIONS


def get_activation(name: str, leaky_slope: float = 0.01) -> Activation:
    """Look up a hidden activation by name (``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``)."""
    key = str(name).lower().replace("-", "_")
    if key == "relu":
        return RELU
    if key == "leaky_relu":
        if not 0 <= leaky_slope < 1:
            raise ConfigError(f"leaky_relu slope must be in [0, 1), got {leaky_slope}")
        return _make_leaky(float(leaky_slope))
    if key == "sigmoid":
        return SIGMOID
    if key == "tanh":
        return TANH
    if key in ("linear", "identity"):
        return LINEAR
    raise ConfigError(f"unknown activation {name!r}: choose one of {', '.join(NAMES)}")
