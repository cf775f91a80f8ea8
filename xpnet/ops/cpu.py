"""Numba twins of the fused ops for NumPy arrays: one pass over memory instead of many.

Same signatures and results as :mod:`xpnet.ops.reference` (tests compare them); any input
the kernels are not built for (other dtypes, non-contiguous views, mixed dtypes) goes to the
reference, so callers never need to check. Numba is optional (``xpnet[fast]``): without it
the module still imports, ``AVAILABLE`` is False and every op is the reference.

Measured on 2 cores (shared VM), 2026-11-23, Adam over 784*1024+1024+1024*10+10 = 814,090
params, median of 50 (3 runs): float32 reference 1.6-2.1 ms, Numba 0.38 ms (one thread;
0.20 ms on two with a passive OpenMP pool); float64 4.8-6.0 ms vs 1.0-1.1 ms. Inside a step
(two 128x784x1024 GEMMs + Adam, best of 100): 4.0 ms reference, 2.7 ms Numba. On 16 floats
(tiny nets): 7.1 us vs 5.1 us. ReLU ops on 128x1024 float32: bias_relu_forward 71 -> 17 us,
relu_backward 40 -> 21 us; softmax_xent on 128x10: 22 -> 10 us.

Design notes, each measured:

* Kernels are compiled lazily per dtype (no explicit signatures) with ``cache=True``: a
  call costs ~0.2 us of dispatch either way, while eager signatures compile every variant
  at import (0.5 s for even a trivial one when not cached).
* ``fastmath=False`` and constants cast to the array dtype, in the reference's operation
  order: float32 stays float32 and the results match NumPy to the last bit or two.
* Nothing global is set (threading layer, thread count, OMP_* variables). Only Adam is a
  parallel loop, and it runs on one thread unless the user's ``OMP_WAIT_POLICY=passive``
  makes Numba's idle workers sleep (see ``_adam_threads``); then it uses
  ``numba.get_num_threads()``, i.e. ``NUMBA_NUM_THREADS``. The row-wise ops stay serial:
  they sit between GEMMs, where a second thread pool only contends with OpenBLAS.
"""

from __future__ import annotations

import os

import numpy as np

from xpnet.ops import reference, threads

try:
    import numba
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None

AVAILABLE = numba is not None

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# Adam buffers below this size skip the parfor (its setup costs a few microseconds).
_SMALL = 4096

if AVAILABLE:
    _jit = numba.njit(cache=True, fastmath=False)
    _pjit = numba.njit(cache=True, fastmath=False, parallel=True)

    @_pjit
    def _adam(p, g, m, v, lr_t, b1, c1, b2, c2, eps, sqrt_bc2):
        # A flat prange: Numba's parfor lowering vectorises this body (measured 0.36 ms on
        # one thread for 814k float32); a plain serial loop or a chunked prange does not
        # (2.6 / 1.6 ms), because LLVM cannot prove p, g, m, v do not overlap there.
        for i in numba.prange(p.shape[0]):
            gi = g[i]
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            p[i] -= lr_t * (mi / (np.sqrt(vi) / sqrt_bc2 + eps))

    @_jit
    def _adam_small(p, g, m, v, lr_t, b1, c1, b2, c2, eps, sqrt_bc2):
        # Same body without the parfor machinery, for buffers too small to amortise it.
        for i in range(p.shape[0]):
            gi = g[i]
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            p[i] -= lr_t * (mi / (np.sqrt(vi) / sqrt_bc2 + eps))

    @_jit
    def _bias_relu_forward(Z, b, A, zero):
        for i in range(Z.shape[0]):
            for j in range(Z.shape[1]):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                A[i, j] = zero if z < zero else z

    @_jit
    def _relu_backward(dA, Z, dZ, zero, one):
        for i in range(Z.shape[0]):
            for j in range(Z.shape[1]):
                dZ[i, j] = dA[i, j] * (one if Z[i, j] > zero else zero)

    @_jit
    def _bias_grad(dZ, db):
        # Row after row, like NumPy's sum(axis=0) on a C-contiguous array (same rounding).
        db[:] = 0
        for i in range(dZ.shape[0]):
            for j in range(dZ.shape[1]):
                db[j] += dZ[i, j]

    _PHI = np.uint64(reference._GOLDEN)
    _M1, _M2 = np.uint64(reference._MIX1), np.uint64(reference._MIX2)
    _S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
    _SHIFT = np.uint64(64 - reference.DROPOUT_BITS)

    @_jit
    def _dropout(H, D, U, stream, thr, scale, zero):
        n = H.shape[1]
        for i in range(H.shape[0]):
            for j in range(n):
                z = stream + np.uint64(i * n + j) * _PHI
                z = (z ^ (z >> _S30)) * _M1
                z = (z ^ (z >> _S27)) * _M2
                z = z ^ (z >> _S31)
                u = scale if (z >> _SHIFT) >= thr else zero
                U[i, j] = u
                D[i, j] = H[i, j] * u

    @_jit
    def _softmax_xent(Z, labels, dZ, loss_rows, scale, smoothing):
        m, k = Z.shape
        one = scale - scale + 1  # constants in the array's dtype
        keep = one - smoothing
        spread = smoothing / k
        for i in range(m):
            y = labels[i]
            zmax = Z[i, 0]
            for j in range(1, k):
                if Z[i, j] > zmax:
                    zmax = Z[i, j]
            target = Z[i, y] - zmax  # read before dZ (maybe Z) is overwritten
            if smoothing != 0:
                row = scale - scale
                for j in range(k):
                    row += Z[i, j]
                target = keep * target + spread * (row - k * zmax)
            total = scale - scale
            for j in range(k):
                e = np.exp(Z[i, j] - zmax)
                dZ[i, j] = e
                total += e
            loss_rows[i] = np.log(total) - target
            r = scale / total
            for j in range(k):
                dZ[i, j] *= r
            if smoothing != 0:
                for j in range(k):
                    dZ[i, j] -= scale * spread
            dZ[i, y] -= scale * keep


def _adam_threads() -> int:
    """Threads for the Adam kernel: all of Numba's only when its pool sleeps when idle.

    Numba's default OpenMP pool spins after each parallel loop and steals the cores the
    next OpenBLAS GEMM needs: measured on 2 cores, two 128x784x1024 GEMMs + Adam took
    8.0 ms with a 2-thread Adam vs 4.7 ms with the NumPy reference. One thread (still
    vectorised) or a passive pool avoids that; we read, never set, the user's settings.
    """
    if os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive":
        return numba.get_num_threads()
    return 1


def _fast(*arrays) -> bool:
    """True when the kernels apply: Numba present, one float dtype, all C-contiguous."""
    if not AVAILABLE:
        return False
    dt = arrays[0].dtype
    return dt in _FLOATS and all(
        isinstance(a, np.ndarray) and a.dtype == dt and a.flags.c_contiguous for a in arrays
    )


def bias_relu_forward(Z, b, A):
    """``Z += b`` in place, then ``A = max(Z, 0)``: one pass instead of two."""
    if not (_fast(Z, b, A) and Z.ndim == 2 and Z.size and b.shape == Z.shape[1:] and A.shape == Z.shape):
        return reference.bias_relu_forward(Z, b, A)
    _bias_relu_forward(Z, b, A, Z.dtype.type(0))  # typed constants keep float32 loops float32
    return A


def relu_backward(dA, Z, dZ):
    """``dZ = dA * (Z > 0)``; ``dZ`` may be ``dA``."""
    if not (_fast(dA, Z, dZ) and Z.ndim == 2 and Z.size and dA.shape == Z.shape == dZ.shape):
        return reference.relu_backward(dA, Z, dZ)
    _relu_backward(dA, Z, dZ, Z.dtype.type(0), Z.dtype.type(1))
    return dZ


def bias_grad(dZ, db):
    """``db = dZ.sum(axis=0)`` into ``db`` (the bias gradient of a dense layer)."""
    if not (_fast(dZ, db) and dZ.ndim == 2 and db.shape == dZ.shape[1:]):
        return reference.bias_grad(dZ, db)
    _bias_grad(dZ, db)
    return db


def softmax_xent(Z, labels, dZ, loss_rows, scale, smoothing=0.0, validate=True):
    """Softmax + cross-entropy (with label smoothing) per row in one sweep; ``dZ`` may be ``Z``."""
    labels = np.asarray(labels)
    ok = (
        _fast(Z, dZ, loss_rows) and Z.ndim == 2 and Z.shape[1] > 0 and dZ.shape == Z.shape
        and loss_rows.shape == Z.shape[:1] and labels.shape == Z.shape[:1] and labels.dtype.kind in "iu"
    )
    if not ok:
        return reference.softmax_xent(Z, labels, dZ, loss_rows, scale, smoothing, validate)
    if validate:  # the kernel itself does not bounds-check
        reference.check_labels(labels, Z.shape[1])
    dt = Z.dtype.type
    _softmax_xent(Z, labels, dZ, loss_rows, dt(scale), dt(smoothing))
    return loss_rows


def dropout(H, D, U, rate, seed, t, layer):
    """Inverted dropout, counter-based masks (the reference's hash), one pass."""
    if not (_fast(H, D, U) and H.ndim == 2 and D.shape == U.shape == H.shape):
        return reference.dropout(H, D, U, rate, seed, t, layer)
    stream = np.uint64(reference.dropout_stream(seed, reference._count(t), layer))
    dt = H.dtype.type
    _dropout(H, D, U, stream, np.uint64(reference.dropout_threshold(rate)), dt(1.0 / (1.0 - rate)), dt(0))
    return D


# One NumPy or BLAS call already, or not on the hot path: no Numba kernel (not measured), the reference.
gather_batch = reference.gather_batch
bias_add = reference.bias_add
step_metrics = reference.step_metrics
dropout_backward = reference.dropout_backward
l2_grad = reference.l2_grad


def matmul(A, B, C, trans_a=False, trans_b=False):
    """``C = op(A) @ op(B)`` through NumPy's BLAS, on the thread count :mod:`xpnet.ops.threads`
    picks for this shape inside a training run."""
    k = A.shape[0] if trans_a else A.shape[-1]
    threads.before_gemm(C.shape[0], C.shape[-1], k)
    return reference.matmul(A, B, C, trans_a, trans_b)


def adam_step(p, g, m, v, t, lr, beta1, beta2, eps):
    """One Adam step, single pass: p, g, m, v read once; p, m, v written once.

    The bias corrections are computed here in float64 and cast once, exactly as the
    reference's Python-float arithmetic does.
    """
    if not (_fast(p, g, m, v) and p.ndim == 1 and p.shape == g.shape == m.shape == v.shape):
        return reference.adam_step(p, g, m, v, t, lr, beta1, beta2, eps)
    t = reference._count(t)
    if hasattr(lr, "shape"):
        lr = float(lr[t - 1])
    bc1 = 1.0 - beta1**t
    bc2 = 1.0 - beta2**t
    dt = p.dtype.type
    args = (dt(lr / bc1), dt(beta1), dt(1.0 - beta1), dt(beta2), dt(1.0 - beta2), dt(eps), dt(bc2**0.5))
    threads = _adam_threads()
    if p.shape[0] < _SMALL:
        _adam_small(p, g, m, v, *args)
    elif threads == numba.get_num_threads():
        _adam(p, g, m, v, *args)
    else:  # set_num_threads is per calling thread in Numba: nothing global changes
        saved = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            _adam(p, g, m, v, *args)
        finally:
            numba.set_num_threads(saved)
    return p
