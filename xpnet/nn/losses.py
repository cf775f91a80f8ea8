"""Output layers and losses: softmax cross-entropy (fused), binary cross-entropy, MSE.

A loss works on the *logits* ``Z`` of the last layer and returns per-row losses plus
``dZ``, the gradient of the mean loss with respect to ``Z``. Working on logits is what
makes cross-entropy stable (log-sum-exp) and lets softmax+CE collapse to ``(P - Y)/m``.
"""

from __future__ import annotations

from xpnet.backend import get_array_module
from xpnet.errors import ConfigError

OUTPUTS = ("softmax", "sigmoid", "linear")
LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")
DEFAULT_LOSS = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy", "linear": "mse"}


def softmax(Z, out=None):
    """Row-wise softmax, stable by subtracting each row's max."""
    xp = get_array_module(Z)
    out = xp.subtract(Z, Z.max(axis=1, keepdims=True), out=out)
    xp.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


def sigmoid(Z, out=None):
    """Logistic function, evaluated so that neither branch overflows."""
    xp = get_array_module(Z)
    e = xp.exp(-xp.abs(Z))  # in (0, 1]
    pos = 1 / (1 + e)
    result = xp.where(Z >= 0, pos, e * pos)
    if out is None:
        return result
    out[...] = result
    return out


def output_activation(name: str, Z, out=None):
    """The network's output: probabilities for softmax/sigmoid, the logits themselves for linear."""
    if name == "softmax":
        return softmax(Z, out)
    if name == "sigmoid":
        return sigmoid(Z, out)
    if out is None:
        return Z.copy()
    out[...] = Z
    return out


def softplus(Z):
    """log(1 + exp(z)) without overflow."""
    xp = get_array_module(Z)
    return xp.maximum(Z, 0) + xp.log1p(xp.exp(-xp.abs(Z)))


def check_combination(output: str, loss: str) -> None:
    if output not in OUTPUTS:
        raise ConfigError(f"unknown output {output!r}: choose one of {', '.join(OUTPUTS)}")
    if loss not in LOSSES:
        raise ConfigError(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
    if loss == "cross_entropy" and output != "softmax":
        raise ConfigError("cross_entropy needs the softmax output (use binary_cross_entropy with sigmoid)")
    if loss == "binary_cross_entropy" and output != "sigmoid":
        raise ConfigError("binary_cross_entropy needs the sigmoid output")


def loss_and_grad(loss: str, output: str, Z, T, dZ, loss_rows, ops, smoothing: float = 0.0):
    """Fill ``loss_rows`` (m,) and ``dZ`` (m, k) = d(mean loss)/dZ; ``dZ`` may alias ``Z``.

    ``T`` is the target: int labels (m,) for cross-entropy (``smoothing``: label smoothing),
    a float (m, k) matrix otherwise.
    """
    m = Z.shape[0]
    if loss == "cross_entropy":
        return ops.softmax_xent(Z, T, dZ, loss_rows, 1.0 / m, smoothing, validate=False)
    xp = get_array_module(Z)
    if loss == "binary_cross_entropy":
        # -[t log s(z) + (1-t) log(1-s(z))] = softplus(z) - t z
        loss_rows[...] = (softplus(Z) - T * Z).sum(axis=1)
        P = sigmoid(Z)
        xp.subtract(P, T, out=dZ)
        dZ *= 1.0 / m
        return loss_rows
    # MSE: (1/m) Σ ½‖a − t‖², through the output activation.
    A = output_activation(output, Z)
    diff = A - T
    loss_rows[...] = 0.5 * (diff * diff).sum(axis=1)
    diff *= 1.0 / m  # dL/dA
    if output == "linear":
        dZ[...] = diff
    elif output == "sigmoid":
        xp.multiply(diff, A * (1 - A), out=dZ)
    else:  # softmax Jacobian-vector product: P ⊙ (dA − Σ dA⊙P)
        xp.multiply(A, diff - (diff * A).sum(axis=1, keepdims=True), out=dZ)
    return loss_rows
