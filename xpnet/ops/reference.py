"""Reference implementations of the fused ops, written once against ``xp``.

These are the definitions: the Numba (``ops/cpu.py``) and CUDA (``ops/cuda.py`` +
``kernels/*.cu``) versions have the same signatures and are tested against these.
All functions write into caller-provided outputs (no allocation the caller did not ask for
beyond small temporaries) so a training step can run on preallocated buffers.
"""

from __future__ import annotations

from ..backend import get_array_module


def bias_relu_forward(Z, b, A):
    """``Z += b`` in place, then ``A = max(Z, 0)``. Z: (m, n), b: (n,), A: (m, n)."""
    xp = get_array_module(Z)
    Z += b
    xp.maximum(Z, 0, out=A)
    return A


def relu_backward(dA, Z, dZ):
    """``dZ = dA * (Z > 0)``; ``dZ`` may be ``dA`` (in place)."""
    xp = get_array_module(Z)
    xp.multiply(dA, Z > 0, out=dZ)
    return dZ


def softmax_xent(Z, labels, dZ, loss_rows, scale):
    """Row-wise softmax + cross-entropy in one pass, numerically stable.

    Z: (m, k) logits; labels: (m,) int class indices; dZ: (m, k) output, may be ``Z``;
    loss_rows: (m,) output, ``logsumexp(Z_i) - Z_i[y_i]``; dZ = (softmax(Z) - onehot(y)) * scale
    (scale = 1/m for the mean loss). Returns ``loss_rows``.
    """
    xp = get_array_module(Z)
    m = Z.shape[0]
    rows = xp.arange(m)
    zmax = Z.max(axis=1, keepdims=True)
    # exp(Z - max) into dZ (possibly Z itself): keep the picked logit first.
    picked = Z[rows, labels] - zmax[:, 0]
    xp.subtract(Z, zmax, out=dZ)
    xp.exp(dZ, out=dZ)
    total = dZ.sum(axis=1, keepdims=True)
    xp.subtract(xp.log(total[:, 0]), picked, out=loss_rows)
    dZ *= scale / total
    dZ[rows, labels] -= scale
    return loss_rows


def adam_step(p, g, m, v, t, lr, beta1, beta2, eps):
    """One Adam update over flat buffers, in place (PyTorch's formulation).

    ``t`` is the 1-based step count *after* this step's increment; a Python int, or a
    1-element integer array (the GPU keeps it on the device so one CUDA graph serves
    every step). ``p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)``.
    """
    xp = get_array_module(p)
    t = int(t) if not hasattr(t, "shape") else int(t.reshape(-1)[0])
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * (g * g)
    bc1 = 1.0 - beta1**t
    bc2 = 1.0 - beta2**t
    denom = xp.sqrt(v)
    denom /= bc2**0.5
    denom += eps
    p -= (lr / bc1) * (m / denom)
    return p
