"""The fused ops, defined once against ``xp``: the contract every implementation follows.

``ops/cpu.py`` (Numba) and ``ops/cuda.py`` (``kernels/*.cu``) offer the same names with the
same signatures and are tested against these in one parametrized module
(``tests/test_ops.py``). The policy all three share:

* outputs are caller-provided buffers (a training step runs on preallocated memory);
* a dtype or memory layout an implementation has no kernel for falls back to this module;
* a label outside ``[0, k)`` raises :class:`~xpnet.errors.DataError` when ``validate`` is
  true (on the GPU that costs one host sync, so the trainer, which checks its labels once
  per data set, passes ``validate=False``; an unchecked bad label then gives a NaN loss).

Random numbers come from a counter-based hash (SplitMix64 of seed, step and element index),
not from a generator's state, so the same masks appear in every implementation, inside a
captured graph, and in a resumed run.

Per-step counters live in 1-element arrays (``t``: optimizer steps taken, ``t0``: its value
at the epoch's first batch), never in Python ints, so one captured CUDA graph serves every
step: the batch offset is ``(t - t0) * batch_size`` and Adam's step count is ``t``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from xpnet.backend import get_array_module, take_rows
from xpnet.errors import ConfigError, DataError

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
DROPOUT_BITS = 24  # uniform integers in [0, 2^24): compared with an integer threshold, exact everywhere


def _count(a) -> int:
    """A host int from an int or a 1-element array (a sync on the GPU; the reference may)."""
    return int(a.reshape(-1)[0]) if hasattr(a, "shape") else int(a)


def check_labels(labels, k: int) -> None:
    """DataError unless every label is a class index in ``[0, k)``."""
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= k):
        lo, hi = int(labels.min()), int(labels.max())
        raise DataError(f"labels must be class indices in [0, {k - 1}], found values from {lo} to {hi}")


def matmul(A, B, C, trans_a=False, trans_b=False):
    """``C = op(A) @ op(B)``, op = transpose when asked: every GEMM of the training step.

    The CUDA-graph trainer passes cuBLAS's version (``ops/cublas.py``) in its place, since
    CuPy refuses cuBLAS calls inside a stream capture.
    """
    xp = get_array_module(C)
    xp.matmul(A.T if trans_a else A, B.T if trans_b else B, out=C)
    return C


def gather_batch(X, y, perm, t, t0, batch_size, Xb, yb):
    """``Xb[r] = X[perm[o + r]]``, ``yb[r] = y[perm[o + r]]`` with ``o = (t - t0) * batch_size``.

    The mini-batch gather of the training loop; ``len(Xb)`` may be less than ``batch_size``
    (the epoch's last batch). Rows outside ``perm`` (a wrong ``t`` or ``t0``) or ``X`` raise
    ConfigError; the CUDA kernel, which cannot raise, writes NaN rows with label -1 instead.
    """
    n, m = perm.shape[0], Xb.shape[0]
    offset = (_count(t) - _count(t0)) * int(batch_size)
    if not 0 <= offset <= n - m:
        raise ConfigError(f"gather_batch: rows {offset}..{offset + m - 1} of a {n}-row permutation "
                          f"(t - t0 = {_count(t) - _count(t0)}, batch size {int(batch_size)}): t or t0 is wrong")
    idx = perm[offset : offset + m]
    if m and (int(idx.min()) < 0 or int(idx.max()) >= X.shape[0]):
        raise ConfigError(f"gather_batch: perm holds row indices outside [0, {X.shape[0] - 1}]")
    take_rows(X, idx, Xb)
    take_rows(y, idx, yb)
    return Xb


def bias_add(Z, b):
    """``Z += b`` row-wise, in place (the output layer; hidden layers fuse it with ReLU)."""
    Z += b
    return Z


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


def bias_grad(dZ, db):
    """``db = dZ.sum(axis=0)``: a dense layer's bias gradient."""
    dZ.sum(axis=0, out=db)
    return db


def softmax_xent(Z, labels, dZ, loss_rows, scale, smoothing=0.0, validate=True):
    """Row-wise softmax + cross-entropy with label smoothing, in one pass, numerically stable.

    Z: (m, k) logits; labels: (m,) class indices; dZ: (m, k) output, may be ``Z``.
    The target row is ``q = (1 - s)·onehot(y) + s/k`` (``torch.nn.CrossEntropyLoss``'s
    ``label_smoothing``), so ``loss_rows[i] = logsumexp(Z_i) - Σ_j q_ij Z_ij`` and
    ``dZ = (softmax(Z) - q) * scale`` (scale = 1/m for the mean loss). Returns ``loss_rows``.
    """
    xp = get_array_module(Z)
    m, k = Z.shape
    if validate:
        check_labels(labels, k)
    rows = xp.arange(m)
    zmax = Z.max(axis=1, keepdims=True)
    # Everything read from Z happens before exp(Z - max) goes into dZ (possibly Z itself).
    target = Z[rows, labels] - zmax[:, 0]
    if smoothing:
        target *= 1.0 - smoothing
        target += (smoothing / k) * (Z.sum(axis=1) - k * zmax[:, 0])
    xp.subtract(Z, zmax, out=dZ)
    xp.exp(dZ, out=dZ)
    total = dZ.sum(axis=1, keepdims=True)
    xp.subtract(xp.log(total[:, 0]), target, out=loss_rows)
    dZ *= scale / total
    if smoothing:
        dZ -= scale * smoothing / k
    dZ[rows, labels] -= scale * (1.0 - smoothing)
    return loss_rows


def step_metrics(Z, labels, loss_rows, loss_acc, correct_acc, t):
    """End of a step's forward half: ``loss_acc += Σ loss_rows`` (float64),
    ``correct_acc += #(argmax Z_i == labels_i)``, and ``t += 1`` (the step counter).

    Z must still hold the logits (the loss gradient goes to a separate buffer). On the GPU
    this is the step's one single-block kernel, the one place a counter can be advanced
    without a race, so it owns the increment.
    """
    loss_acc += loss_rows.sum(dtype=loss_acc.dtype)
    correct_acc += (Z.argmax(axis=1) == labels).sum()
    t += 1
    return loss_acc


class DenseViews(NamedTuple):
    """Per-layer views of :func:`dense_step`'s buffers (see :func:`dense_views`)."""

    W: list
    b: list
    dW: list
    db: list
    Z: list
    H: list
    dA: list
    D: list
    U: list


def dense_views(params, grads, sizes, m: int, Z, H, dA, D=None, U=None) -> DenseViews:
    """The layout of :func:`dense_step`'s flat buffers, as per-layer views.

    ``W_l`` (n_{l+1}, n_l) and ``b_l`` from ``params`` (flat ``[W0, b0, W1, b1, ...]``), their
    gradients from ``grads``, and ``Z_l``, ``H_l``, ``dA_l`` (and dropout's ``D_l``, ``U_l``) as
    (m, n_l) views. Each hidden layer's block in ``Z``, ``H``, ``dA``, ``D`` and ``U`` is stored
    feature-major, (n_l, m) with samples as columns (the course notes' ``Z = W·A + b``), so the
    first layer's GEMMs may run as ``W0 @ X.T`` and ``dZ0 @ X``, which OpenBLAS does faster than
    ``X @ W0.T`` and ``dZ0.T @ X`` at wide layers; the views here are their transposes. The
    logits block (last in ``Z``) is row-major (m, n_L), as the loss reads it.
    """
    L = len(sizes) - 1
    v = DenseViews([], [], [], [], [], [], [], [], [])
    po, zo = 0, 0
    for l in range(L):
        n_in, n_out = int(sizes[l]), int(sizes[l + 1])
        v.W.append(params[po : po + n_out * n_in].reshape(n_out, n_in))
        v.dW.append(grads[po : po + n_out * n_in].reshape(n_out, n_in))
        v.b.append(params[po + n_out * n_in : po + n_out * n_in + n_out])
        v.db.append(grads[po + n_out * n_in : po + n_out * n_in + n_out])
        po += n_out * n_in + n_out
        if l == L - 1:
            v.Z.append(Z[zo : zo + m * n_out].reshape(m, n_out))
        else:  # the hidden buffers hold the hidden blocks of Z, in order
            for views, buf in ((v.Z, Z), (v.H, H), (v.dA, dA), (v.D, D), (v.U, U)):
                if buf is not None:
                    views.append(buf[zo : zo + m * n_out].reshape(n_out, m).T)
        zo += m * n_out
    return v


def dense_step(X, labels, params, grads, sizes, Z, H, dA, G, loss_rows, loss_acc, correct_acc, t, smoothing=0.0,
               dropout_rate=0.0, seed=0, D=None, U=None, XT=None):
    """A ReLU MLP's whole step but the update: forward (inverted dropout on the hidden layers
    when ``dropout_rate`` > 0, masks from ``seed``), softmax cross-entropy (mean), step metrics
    and backward, composed of the ops above.

    ``sizes`` = (n_0, ..., n_L); ``params``/``grads``: flat ``[W0, b0, W1, b1, ...]`` with ``W_l``
    (n_{l+1}, n_l); ``X`` (m, n_0); ``labels`` (m,) class indices (not validated). Work buffers,
    flat, laid out as :func:`dense_views` says: ``Z`` of m·Σ_{l≥1} n_l (pre-activations, logits
    last), ``H`` and ``dA`` (and with dropout ``D``, ``U``: :func:`dropout`'s, its masks drawn at
    step ``t`` before the increment, as the op-by-op step draws them) of m·Σ n_hidden; ``G``
    (m, n_L) receives dLoss/dlogits, ``loss_rows`` (m,). Counters as :func:`step_metrics`. An
    implementation may fuse it into fewer calls (small networks are per-call overhead). ``XT``:
    ``X.T`` as a C-contiguous (n_0, m) array, read where :func:`dense_step_transposed` says so.
    """
    m, L = X.shape[0], len(sizes) - 1
    v = dense_views(params, grads, sizes, m, Z, H, dA, D, U)
    inputs = [X]
    for l in range(L):
        matmul(inputs[l], v.W[l], v.Z[l], trans_b=True)
        if l == L - 1:
            bias_add(v.Z[l], v.b[l])
        else:
            bias_relu_forward(v.Z[l], v.b[l], v.H[l])
            if dropout_rate:
                inputs.append(dropout(v.H[l], v.D[l], v.U[l], dropout_rate, seed, t, l))
            else:
                inputs.append(v.H[l])
    softmax_xent(v.Z[-1], labels, G, loss_rows, 1.0 / m, smoothing, validate=False)
    step_metrics(v.Z[-1], labels, loss_rows, loss_acc, correct_acc, t)
    dZ = G
    for l in range(L - 1, -1, -1):
        matmul(dZ, inputs[l], v.dW[l], trans_a=True)
        bias_grad(dZ, v.db[l])
        if l > 0:
            matmul(dZ, v.W[l], v.dA[l - 1])
            if dropout_rate:
                dropout_backward(v.dA[l - 1], v.U[l - 1], v.dA[l - 1])
            relu_backward(v.dA[l - 1], v.Z[l - 1], v.dA[l - 1])
            dZ = v.dA[l - 1]
    return loss_rows


def dense_step_fits(sizes, m, dtype) -> bool:
    """Whether this implementation prefers :func:`dense_step` over the op-by-op step for this
    network: the reference does not (the same ops, called one by one)."""
    return False


def dense_step_transposed(sizes) -> bool:
    """Whether :func:`dense_step` reads ``XT`` (the batch transposed) for this network: the
    reference does not."""
    return False


def _mix(z):
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    xp = get_array_module(z)
    z = (z ^ (z >> xp.uint64(30))) * xp.uint64(_MIX1)
    z = (z ^ (z >> xp.uint64(27))) * xp.uint64(_MIX2)
    return z ^ (z >> xp.uint64(31))


def _mix_int(z: int) -> int:
    """:func:`_mix` on one Python int, modulo 2^64."""
    z &= 2**64 - 1
    z = ((z ^ (z >> 30)) * _MIX1) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * _MIX2) & (2**64 - 1)
    return z ^ (z >> 31)


def dropout_stream(seed: int, t: int, layer: int) -> int:
    """The per-(seed, step, layer) key every element's hash starts from."""
    return _mix_int(_mix_int(int(seed) * _GOLDEN + int(t)) + int(layer) * _GOLDEN)


def dropout_threshold(rate: float) -> int:
    """Drop an element when its 24-bit uniform integer is below this."""
    return int(round(float(rate) * 2**DROPOUT_BITS))


def dropout(H, D, U, rate, seed, t, layer):
    """Inverted dropout: ``U = keep / (1 - rate)`` (keep = 0 or 1), ``D = H * U``. H, D, U: (m, n).

    Element ``i`` of layer ``layer`` at step ``t`` (1-element array or int) is kept when
    ``mix(mix(mix(seed·φ + t) + layer·φ) + i·φ) >> 40 >= round(rate · 2^24)`` (φ: the golden
    ratio constant, SplitMix64's increment): a pure function of (seed, t, layer, i).
    """
    xp = get_array_module(H)
    stream = np.uint64(dropout_stream(seed, _count(t), layer))
    idx = xp.arange(H.size, dtype=np.uint64).reshape(H.shape)
    bits = _mix(stream + idx * np.uint64(_GOLDEN)) >> np.uint64(64 - DROPOUT_BITS)
    keep = bits >= np.uint64(dropout_threshold(rate))
    xp.multiply(keep, H.dtype.type(1.0 / (1.0 - rate)), out=U)
    xp.multiply(H, U, out=D)
    return D


def dropout_backward(dD, U, dH):
    """``dH = dD * U`` (the dropout mask of the forward pass); ``dH`` may be ``dD``."""
    get_array_module(U).multiply(dD, U, out=dH)
    return dH


def l2_grad(dW, W, coef, loss_acc, loss_coef):
    """``dW += coef·W`` in place and ``loss_acc += loss_coef·ΣW²`` (float64).

    With batch size m and L2 strength λ: ``coef = λ/m`` and ``loss_coef = λ/2`` (the penalty
    λ/(2m)·ΣW² times the m rows the epoch's loss sum counts per step).
    """
    xp = get_array_module(W)
    dW += W.dtype.type(coef) * W
    loss_acc += loss_coef * xp.vdot(W, W).astype(loss_acc.dtype)
    return dW


def check_step(t) -> int:
    """Adam's step count ``t`` as a host int; ConfigError below 1 (``1 - β^0`` is 0)."""
    step = _count(t)
    if step < 1:
        raise ConfigError(f"adam_step needs t >= 1 (the step count of this update), got {step}")
    return step


def step_lr(lr, t: int) -> float:
    """The learning rate of step ``t``: ``lr``, or a table's ``lr[min(t, len) - 1]`` (past its end,
    the last rate holds, as in the CUDA kernel)."""
    if hasattr(lr, "shape"):
        return float(lr[min(t, lr.shape[0]) - 1])
    return float(lr)


def adam_step(p, g, m, v, t, lr, beta1, beta2, eps):
    """One Adam update over flat buffers, in place (PyTorch's formulation).

    ``t`` is the 1-based step count of this update: an int or a 1-element integer array
    (below 1: ConfigError). ``lr`` is a float, or a 1-D table of per-step learning rates read
    at ``lr[min(t, len) - 1]`` (a schedule that a captured CUDA graph follows without recapture).
    ``p -= lr/(1-β1^t) · m / (√v/√(1-β2^t) + ε)``.
    """
    xp = get_array_module(p)
    t = check_step(t)
    lr = step_lr(lr, t)
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


# The contract: the ops every implementation (reference, Numba, CUDA) offers with these signatures.
# COMPOSITES are whole steps built from them, offered by every implementation too (the reference's
# composes the ops above; Numba fuses a small network's step). The other public names here
# (check_labels, check_step, step_lr, dropout_stream, dropout_threshold) are shared checks and formulas.
OPS = ("matmul", "gather_batch", "bias_add", "bias_relu_forward", "relu_backward", "bias_grad", "softmax_xent",
       "step_metrics", "dropout", "dropout_backward", "l2_grad", "adam_step")
COMPOSITES = ("dense_step", "dense_step_fits", "dense_step_transposed")
