"""Numba twins of the fused ops for NumPy arrays: one pass over memory instead of many.

Same signatures and results as :mod:`xpnet.ops.reference` (tests compare them); any input
the kernels are not built for (other dtypes, non-contiguous views, mixed dtypes) goes to the
reference, so callers never need to check. Numba is optional (``xpnet[fast]``): without it
the module still imports, ``AVAILABLE`` is False and every op is the reference.

What they save against the reference (Adam, the ReLU ops, softmax-CE, each alone and inside a
step) was measured on the 2-core VM: bench/results/cpu-2core-2026-11-23/ops.md.

Design notes, each measured:

* Kernels are compiled lazily per dtype (no explicit signatures) with ``cache=True``: a
  call costs ~0.2 us of dispatch either way, while eager signatures compile every variant
  at import (0.5 s for even a trivial one when not cached).
* ``fastmath=False`` and constants cast to the array dtype, in the reference's operation
  order (but one product in Adam, see ``adam_step``): float32 stays float32 and the results match
  NumPy to the last bit or two.
* Nothing global is set here (threading layer, OMP_* variables). Thread counts are chosen by
  :mod:`xpnet.ops.threads` inside a training run only, and restored after it: BLAS threads
  per GEMM shape and machine load (``matmul``), and Adam (the one parallel loop) on the run's
  BLAS cores when idle OpenBLAS and OpenMP workers sleep (as the ``xpnet`` command sets up),
  else on one thread.
  The row-wise ops stay serial: they sit between GEMMs, where a second thread pool only
  contends with OpenBLAS.
* ``dense_step``: the whole step but the update for ReLU networks (dropout included: the same
  counter-hash masks as the op-by-op step), in the reference's buffer layout (hidden layers
  feature-major, ``reference.dense_views``). The first layer's two GEMMs stay on BLAS (but a
  narrow first layer's forward GEMM: ``_rows_matmul``; a wide one's reads the batch transposed
  when the caller gives it, ``dense_step_transposed``); between them, one Numba kernel when the
  later layers are small (a step of a dozen small calls is mostly per-call overhead there), else
  BLAS GEMMs between small kernels. A one-hidden-layer network whose first GEMM the BLAS policy would
  split over threads is split by hidden units instead (``_dense_split``): each thread takes a block
  of units through both GEMMs (one single-threaded call each into NumPy's own OpenBLAS, found by
  :mod:`xpnet.ops.cblas`) and everything between them, so the cores meet twice a step, not at every
  GEMM, and the middle no longer runs on one core. The step took 0.954-0.965x the time of the
  other path at 256, 512 and 1024 units (bench/results/cpu-2core-2026-12-01-split-units/).
  The one-call kernel's GEMMs are loops in small blocks (each row loaded and stored once per four
  to eight multiply-adds) whose sums are reassociated into SIMD lanes (``fastmath``
  reassoc/contract on the ``_gemm_jit`` kernels only), as a BLAS orders its sums its own way.
  Measured at 784-1024-10 on 2 cores against the op-by-op step:
  bench/results/cpu-2core-2026-11-30-dense/; the blocks: bench/results/cpu-2core-2026-12-01-blocks/.
"""

from __future__ import annotations

import functools

import numpy as np

from xpnet.ops import cblas, reference, threads

try:
    import numba
    from llvmlite import ir as llvm_ir
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None

AVAILABLE = numba is not None

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# Below this many parameters Adam runs on the calling thread: waking a parfor's worker after a GEMM costs
# more than the second thread saves (bench/results/cpu-2core-2026-11-30-memory/).
_PARALLEL_MIN = 1 << 18

if AVAILABLE:
    # nogil: while one kernel runs, a side job's Python (ops/threads.py) can run on the other core.
    _jit = numba.njit(cache=True, fastmath=False, nogil=True)
    _pjit = numba.njit(cache=True, fastmath=False, parallel=True, nogil=True)

    @numba.njit(inline="always", error_model="numpy")
    def _adam_one(p, g, m, v, i, lr_t, b1, c1, b2, c2, eps, inv_sqrt_bc2):
        # One parameter's update, the body of both Adam kernels (inlined: each stays one vectorised loop).
        gi = g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] -= lr_t * (mi / (np.sqrt(vi) * inv_sqrt_bc2 + eps))

    @_pjit
    def _adam(p, g, m, v, lr_t, b1, c1, b2, c2, eps, inv_sqrt_bc2):
        # A flat prange, which Numba lowers with NumPy's error model, so the body is vectorised
        # (as _adam_serial's; a chunked prange calling a serial loop was not).
        for i in numba.prange(p.shape[0]):
            _adam_one(p, g, m, v, i, lr_t, b1, c1, b2, c2, eps, inv_sqrt_bc2)

    @numba.njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
    def _adam_serial(p, g, m, v, lr_t, b1, c1, b2, c2, eps, inv_sqrt_bc2):
        # _adam's body on the calling thread, for small buffers and one-thread runs (no parfor to
        # launch, no worker to wake). error_model="numpy" (x/0 gives inf or NaN, as NumPy and the
        # parfor body do): Python's model tests every divisor, and the loop then is not vectorised.
        for i in range(p.shape[0]):
            _adam_one(p, g, m, v, i, lr_t, b1, c1, b2, c2, eps, inv_sqrt_bc2)

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

    @intrinsic
    def _prefetch(typingctx, arr, idx):
        # llvm.prefetch (read, keep in every cache level): a hint, a no-op where the CPU has none.
        sig = numba.types.void(arr, numba.types.intp)

        def codegen(context, builder, sig, args):
            ary = context.make_array(sig.args[0])(context, builder, args[0])
            i8p, i32 = llvm_ir.IntType(8).as_pointer(), llvm_ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, llvm_ir.FunctionType(llvm_ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8")
            ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
            builder.call(fn, [ptr, llvm_ir.Constant(i32, 0), llvm_ir.Constant(i32, 3), llvm_ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return sig, codegen

    @_jit
    def _gather_batch(X, y, perm, t, t0, batch_size, Xb, yb):
        # The reference's gather and its checks in one call, then a prefetch of the next batch's
        # rows: False (nothing trusted) when a row falls outside perm or X, and the caller lets
        # the reference raise its error.
        n, m = perm.shape[0], Xb.shape[0]
        offset = (np.int64(t[0]) - np.int64(t0[0])) * batch_size
        if offset < 0 or offset > n - m:
            return False
        for r in range(m):
            src = perm[offset + r]
            if src < 0 or src >= X.shape[0]:
                return False
            for k in range(X.shape[1]):  # a loop, not Xb[r, :] = X[src]: Numba's slice copy is 2x slower
                Xb[r, k] = X[src, k]
            yb[r] = y[src]
        # Ask for the first cache line of each of the next batch's rows now, so they arrive while
        # this step computes (the CPU's stream prefetcher follows a row once its start is read).
        Xf = X.reshape(-1)
        for r in range(offset + m, min(offset + 2 * m, n)):
            src = perm[r]
            if 0 <= src < X.shape[0] and X.shape[1] > 0:
                _prefetch(Xf, src * X.shape[1])
        return True

    _PHI = np.uint64(reference._GOLDEN)
    _M1, _M2 = np.uint64(reference._MIX1), np.uint64(reference._MIX2)
    _S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
    _SHIFT = np.uint64(64 - reference.DROPOUT_BITS)

    @_jit
    def _keep(stream, index, thr, scale, zero):
        # The reference's dropout hash of one element: scale when kept, else zero.
        z = stream + np.uint64(index) * _PHI
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        z = z ^ (z >> _S31)
        return scale if (z >> _SHIFT) >= thr else zero

    @_jit
    def _dropout(H, D, U, stream, thr, scale, zero):
        n = H.shape[1]
        for i in range(H.shape[0]):
            for j in range(n):
                u = _keep(stream, i * n + j, thr, scale, zero)
                U[i, j] = u
                D[i, j] = H[i, j] * u

    @_jit
    def _fm_dropout(HT, DT, UT, stream, thr, scale, zero, j0, n):
        # The same on a feature-major layer: element (i, j) of the (m, n) layer lies at [j, i]. HT may
        # be units j0.. of the layer's n (a part of the split step): the hash takes the layer's index.
        for j in range(HT.shape[0]):
            for i in range(HT.shape[1]):
                u = _keep(stream, i * n + j0 + j, thr, scale, zero)
                UT[j, i] = u
                DT[j, i] = HT[j, i] * u

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


    @_jit
    def _fm_bias_relu(ZT, b, HT, zero):
        # A feature-major hidden layer (n, m): ZT += b per row, HT = max(ZT, 0).
        for j in range(ZT.shape[0]):
            bj = b[j]
            for i in range(ZT.shape[1]):
                z = ZT[j, i] + bj
                ZT[j, i] = z
                HT[j, i] = zero if z < zero else z

    @_jit
    def _fm_from_rows(R, b, ZT, HT, zero):
        # The same from a row-major GEMM output R (m, n), transposed into ZT, HT (n, m).
        for i in range(R.shape[0]):
            for j in range(R.shape[1]):
                z = R[i, j] + b[j]
                ZT[j, i] = z
                HT[j, i] = zero if z < zero else z

    @_jit
    def _transpose(src, dst):
        for i in range(dst.shape[0]):
            for j in range(dst.shape[1]):
                dst[i, j] = src[j, i]

    @_jit
    def _dense_output(Zl, b, labels, G, loss_rows, loss_acc, correct_acc, t, scale, smoothing):
        # The logits' bias, softmax-CE into G, and step_metrics (float64 loss sum, argmax where a
        # NaN wins as in NumPy, t += 1). Zl (m, k) row-major.
        m, k = Zl.shape
        for i in range(m):
            for j in range(k):
                Zl[i, j] += b[j]
        _softmax_xent(Zl, labels, G, loss_rows, scale, smoothing)
        total = 0.0
        hits = 0
        for i in range(m):
            total += loss_rows[i]
            best = 0
            for j in range(k):
                if np.isnan(Zl[i, j]):
                    best = j
                    break
                if Zl[i, j] > Zl[i, best]:
                    best = j
            if best == labels[i]:
                hits += 1
        loss_acc[0] += total
        correct_acc[0] += hits
        t[0] += 1

    _gemm_jit = numba.njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True)

    # Inlined into its callers: as a plain call returning a tuple, they ran 6-14 % slower.
    @numba.njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True, inline="always")
    def _dots_4x2(A, r, B, c, zero):
        # The dot products of rows r..r+3 of A with rows c and c+1 of B, over their last axis: each load
        # feeds two or four multiply-adds. (a0..a3 with row c, b0..b3 with row c+1.)
        a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zero
        for k in range(A.shape[1]):
            w, v = B[c, k], B[c + 1, k]
            x0, x1, x2, x3 = A[r, k], A[r + 1, k], A[r + 2, k], A[r + 3, k]
            a0 += x0 * w
            a1 += x1 * w
            a2 += x2 * w
            a3 += x3 * w
            b0 += x0 * v
            b1 += x1 * v
            b2 += x2 * v
            b3 += x3 * v
        return a0, a1, a2, a3, b0, b1, b2, b3

    @_gemm_jit
    def _rows_matmul(X, W, R, zero):
        # R = X @ W.T for a narrow W (see NARROW_ROWS_MIN): four samples by two outputs per sweep along
        # the rows (_dots_4x2); the rows and columns left over as plain dot products. The sums
        # reassociated into SIMD lanes, as a BLAS does.
        m, n = R.shape
        m4, n2 = m - m % 4, n - n % 2
        for s in range(0, m4, 4):
            for j in range(0, n2, 2):
                a0, a1, a2, a3, b0, b1, b2, b3 = _dots_4x2(X, s, W, j, zero)
                R[s, j], R[s + 1, j], R[s + 2, j], R[s + 3, j] = a0, a1, a2, a3
                R[s, j + 1], R[s + 1, j + 1], R[s + 2, j + 1], R[s + 3, j + 1] = b0, b1, b2, b3
        for s in range(m):
            for j in range(n2 if s < m4 else 0, n):
                acc = zero
                for k in range(X.shape[1]):
                    acc += X[s, k] * W[j, k]
                R[s, j] = acc

    @_gemm_jit
    def _fm_relu_backward(dAT, UT, ZT, db, zero):
        # dAT *= UT (dropout's mask; UT with no rows: none) and (ZT > 0) in place, and db = its row
        # sums: a feature-major hidden layer's dZ and bias gradient in one pass (a select, not a
        # branch, so the loop vectorises; the sums reassociated).
        drop = UT.shape[0] > 0
        for k in range(dAT.shape[0]):
            s = zero
            if drop:  # two loops, not one with a select on drop: merged, LLVM sums db in another order
                for i in range(dAT.shape[1]):
                    v = dAT[k, i] * UT[k, i] if ZT[k, i] > zero else zero
                    dAT[k, i] = v
                    s += v
            else:
                for i in range(dAT.shape[1]):
                    v = dAT[k, i] if ZT[k, i] > zero else zero
                    dAT[k, i] = v
                    s += v
            db[k] = s

    @_gemm_jit
    def _fm_add_block(ZT, W, AT, k, q):
        # ZT += W[:, k : k + q] @ AT[k : k + q] on feature-major layers: four inputs per pass over each
        # output row when q == 4 (the row is loaded and stored once per four multiply-adds), else one.
        nc, m = ZT.shape
        if q == 4:
            for j in range(nc):
                w0, w1, w2, w3 = W[j, k], W[j, k + 1], W[j, k + 2], W[j, k + 3]
                for i in range(m):
                    ZT[j, i] += w0 * AT[k, i] + w1 * AT[k + 1, i] + w2 * AT[k + 2, i] + w3 * AT[k + 3, i]
        else:
            for j in range(nc):
                for r in range(k, k + q):
                    w = W[j, r]
                    for i in range(m):
                        ZT[j, i] += w * AT[r, i]

    @_gemm_jit
    def _fm_bias_relu_logits(ZT, b, HT, W, LT, zero):
        # _fm_bias_relu on the last hidden layer (n, m) and, while its rows are in L1, the logits
        # LT = W @ HT for a narrow W (at most NARROW rows): one pass over the layer instead of two,
        # four units at a time.
        n = ZT.shape[0]
        for c in range(LT.shape[0]):
            for i in range(LT.shape[1]):
                LT[c, i] = zero
        for k in range(0, n, 4):
            q = min(4, n - k)
            _fm_bias_relu(ZT[k : k + q], b[k : k + q], HT[k : k + q], zero)
            _fm_add_block(LT, W, HT, k, q)

    @_gemm_jit
    def _fm_matmul(AT, W, ZT, zero):
        # ZT = W @ AT on feature-major layers, four inputs at a time (_fm_add_block), SIMD over the
        # samples (contracted into FMAs, as a BLAS does).
        n = W.shape[1]
        for j in range(ZT.shape[0]):
            for i in range(ZT.shape[1]):
                ZT[j, i] = zero
        for k in range(0, n, 4):
            _fm_add_block(ZT, W, AT, k, min(4, n - k))

    @_gemm_jit
    def _fm_weight_grad_block(dZT, AT, dW, k0, q, zero):
        # dW[:, k0 : k0 + q] = dZT @ AT[k0 : k0 + q].T, dot products over the samples: four units by
        # two outputs per sweep when q == 4 (_dots_4x2).
        nc, m = dZT.shape
        nc2 = nc - nc % 2 if q == 4 else 0
        for j in range(0, nc2, 2):
            a0, a1, a2, a3, b0, b1, b2, b3 = _dots_4x2(AT, k0, dZT, j, zero)
            dW[j, k0], dW[j, k0 + 1], dW[j, k0 + 2], dW[j, k0 + 3] = a0, a1, a2, a3
            dW[j + 1, k0], dW[j + 1, k0 + 1], dW[j + 1, k0 + 2], dW[j + 1, k0 + 3] = b0, b1, b2, b3
        for j in range(nc2, nc):
            for k in range(k0, k0 + q):
                acc = zero
                for i in range(m):
                    acc += dZT[j, i] * AT[k, i]
                dW[j, k] = acc

    @_gemm_jit
    def _fm_input_grad_row(dZT, W, k, out):
        # out = W[:, k] @ dZT, one row of W.T @ dZT: up to eight outputs per pass over the row, so it
        # is loaded and stored once per eight multiply-adds (the first pass assigns; a loop-invariant
        # select there made the loops slower).
        nc, m = dZT.shape
        j = 0
        while j < nc:
            r = nc - j
            if r >= 8:
                w0, w1, w2, w3 = W[j, k], W[j + 1, k], W[j + 2, k], W[j + 3, k]
                w4, w5, w6, w7 = W[j + 4, k], W[j + 5, k], W[j + 6, k], W[j + 7, k]
                if j == 0:
                    for i in range(m):
                        out[i] = (w0 * dZT[j, i] + w1 * dZT[j + 1, i] + w2 * dZT[j + 2, i] + w3 * dZT[j + 3, i]
                                  + w4 * dZT[j + 4, i] + w5 * dZT[j + 5, i] + w6 * dZT[j + 6, i] + w7 * dZT[j + 7, i])
                else:
                    for i in range(m):
                        out[i] += (w0 * dZT[j, i] + w1 * dZT[j + 1, i] + w2 * dZT[j + 2, i] + w3 * dZT[j + 3, i]
                                   + w4 * dZT[j + 4, i] + w5 * dZT[j + 5, i] + w6 * dZT[j + 6, i] + w7 * dZT[j + 7, i])
                j += 8
            elif r >= 4:
                w0, w1, w2, w3 = W[j, k], W[j + 1, k], W[j + 2, k], W[j + 3, k]
                if j == 0:
                    for i in range(m):
                        out[i] = w0 * dZT[j, i] + w1 * dZT[j + 1, i] + w2 * dZT[j + 2, i] + w3 * dZT[j + 3, i]
                else:
                    for i in range(m):
                        out[i] += w0 * dZT[j, i] + w1 * dZT[j + 1, i] + w2 * dZT[j + 2, i] + w3 * dZT[j + 3, i]
                j += 4
            elif r >= 2:
                w0, w1 = W[j, k], W[j + 1, k]
                if j == 0:
                    for i in range(m):
                        out[i] = w0 * dZT[j, i] + w1 * dZT[j + 1, i]
                else:
                    for i in range(m):
                        out[i] += w0 * dZT[j, i] + w1 * dZT[j + 1, i]
                j += 2
            else:
                w0 = W[j, k]
                if j == 0:
                    for i in range(m):
                        out[i] = w0 * dZT[j, i]
                else:
                    for i in range(m):
                        out[i] += w0 * dZT[j, i]
                j += 1

    @_gemm_jit
    def _fm_backward(dZT, AT, W, dW, dAT, UpT, ZpT, dbp, zero):
        # dW = dZT @ AT.T, dAT = (W.T @ dZT) * UpT * (ZpT > 0), dbp = row sums of dAT: four units of
        # the layer below at a time, while their rows are in L1 (the sums reassociated into SIMD
        # lanes, as a BLAS orders its sums its own way).
        n = AT.shape[0]
        for k0 in range(0, n, 4):
            q = min(4, n - k0)
            _fm_weight_grad_block(dZT, AT, dW, k0, q, zero)
            for k in range(k0, k0 + q):
                _fm_input_grad_row(dZT, W, k, dAT[k])
            _fm_relu_backward(dAT[k0 : k0 + q], UpT[k0 : k0 + q], ZpT[k0 : k0 + q], dbp[k0 : k0 + q], zero)

    @_jit
    def _dense_middle(rows_first, labels, P, Gr, sizes, Zw, Hw, dAw, Dw, Uw, streams, thr, keep, G, loss_rows, loss_acc,
                      correct_acc, t, scale, smoothing):
        # Everything of the dense step between the first layer's two GEMMs (left to BLAS), in the
        # layout of reference.dense_views: the first layer's bias (and ReLU), the later layers,
        # softmax-CE, metrics, their backward, and dZ0 / db0. rows_first: the first GEMM wrote
        # (m, n1) rows into dA's first block, to be transposed here. Dropout when streams (one
        # hash stream per hidden layer) is not empty: masks into Uw, the next layer's input in Dw.
        m = G.shape[0]
        L = sizes.shape[0] - 1
        zero = scale - scale
        drop = streams.shape[0] > 0
        po = np.zeros(L + 1, dtype=np.int64)  # where W_l starts in P, and the layer's block in Zw (H, dA, D, U)
        zo = np.zeros(L + 1, dtype=np.int64)
        for l in range(L):
            po[l + 1] = po[l] + sizes[l + 1] * sizes[l] + sizes[l + 1]
            zo[l + 1] = zo[l] + m * sizes[l + 1]
        n1, nL = sizes[1], sizes[L]
        Zl = Zw[zo[L - 1] : zo[L]].reshape((m, nL))
        Aw = Dw if drop else Hw  # the later layers' inputs
        if L > 1:
            for l in range(L):
                n_in, n_out = sizes[l], sizes[l + 1]
                b = P[po[l] + n_out * n_in : po[l + 1]]
                if l == 0:
                    Z, H = Zw[: zo[1]].reshape((n1, m)), Hw[: zo[1]].reshape((n1, m))
                    if rows_first:
                        _fm_from_rows(dAw[: zo[1]].reshape((m, n1)), b, Z, H, zero)
                    else:
                        _fm_bias_relu(Z, b, H, zero)
                else:
                    W = P[po[l] : po[l] + n_out * n_in].reshape((n_out, n_in))
                    A = Aw[zo[l - 1] : zo[l]].reshape((n_in, m))
                    if l == L - 1:  # the logits, through G's memory (written only after this)
                        ZT = G.reshape((nL, m))
                        _fm_matmul(A, W, ZT, zero)
                        _transpose(ZT, Zl)
                        break
                    Z, H = Zw[zo[l] : zo[l + 1]].reshape((n_out, m)), Hw[zo[l] : zo[l + 1]].reshape((n_out, m))
                    _fm_matmul(A, W, Z, zero)
                    _fm_bias_relu(Z, b, H, zero)
                if drop:
                    _fm_dropout(H, Dw[zo[l] : zo[l + 1]].reshape((n_out, m)), Uw[zo[l] : zo[l + 1]].reshape((n_out, m)),
                                streams[l], thr, keep, zero, 0, n_out)
        _dense_output(Zl, P[po[L] - nL : po[L]], labels, G, loss_rows, loss_acc, correct_acc, t, scale, smoothing)
        _bias_grad(G, Gr[po[L] - nL : po[L]])
        if L == 1:
            return
        dZ = np.empty((nL, m), dtype=G.dtype)
        _transpose(G, dZ)
        no_mask = np.empty((0, 0), dtype=G.dtype)
        for l in range(L - 1, 0, -1):  # dW_l, then dZ_{l-1} and db_{l-1}
            n_in, n_out = sizes[l], sizes[l + 1]
            W = P[po[l] : po[l] + n_out * n_in].reshape((n_out, n_in))
            dW = Gr[po[l] : po[l] + n_out * n_in].reshape((n_out, n_in))
            dA = dAw[zo[l - 1] : zo[l]].reshape((n_in, m))
            U = Uw[zo[l - 1] : zo[l]].reshape((n_in, m)) if drop else no_mask
            _fm_backward(dZ, Aw[zo[l - 1] : zo[l]].reshape((n_in, m)), W, dW, dA, U,
                         Zw[zo[l - 1] : zo[l]].reshape((n_in, m)), Gr[po[l] - n_in : po[l]], zero)
            dZ = dA

    @intrinsic
    def _cblas_gemm(typingctx, addr, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        # A call to the row-major CBLAS gemm at addr (cblas.gemm_address: 64-bit integers), A not
        # transposed; a, b, c addresses. The address is an argument, so its callers stay cacheable.
        ints = (addr, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
        if any(x != numba.types.int64 for x in ints) or alpha not in (numba.types.float32, numba.types.float64) \
                or beta != alpha:
            return None
        sig = numba.types.void(addr, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

        def codegen(context, builder, sig, args):
            i32, i64, i8p = llvm_ir.IntType(32), llvm_ir.IntType(64), llvm_ir.IntType(8).as_pointer()
            real = context.get_value_type(sig.args[5])
            fnty = llvm_ir.FunctionType(llvm_ir.VoidType(),
                                        [i32, i32, i32, i64, i64, i64, real, i8p, i64, i8p, i64, real, i8p, i64])
            fn = builder.inttoptr(args[0], fnty.as_pointer())
            ptrs = {i: builder.inttoptr(args[i], i8p) for i in (6, 8, 11)}
            builder.call(fn, [llvm_ir.Constant(i32, cblas.ROW_MAJOR), llvm_ir.Constant(i32, cblas.NO_TRANS),
                              builder.trunc(args[1], i32), args[2], args[3], args[4], args[5], ptrs[6], args[7],
                              ptrs[8], args[9], args[10], ptrs[11], args[12]])
            return context.get_dummy_value()

        return sig, codegen

    @_jit
    def _blas_gemm(addr, A, B, C, trans_b, one, zero):
        # C = A @ B (B.T when trans_b) through NumPy's BLAS on this thread (the caller's loop is the
        # split): row-major views whose rows are contiguous.
        _cblas_gemm(np.int64(addr), np.int64(cblas.TRANS if trans_b else cblas.NO_TRANS), np.int64(C.shape[0]),
                    np.int64(C.shape[1]), np.int64(A.shape[1]), one, np.int64(A.ctypes.data),
                    np.int64(A.strides[0] // A.itemsize), np.int64(B.ctypes.data), np.int64(B.strides[0] // B.itemsize),
                    zero, np.int64(C.ctypes.data), np.int64(C.strides[0] // C.itemsize))

    @_pjit
    def _dense_split(parts, gemm, X, B, trans_b, labels, P, Gr, n1, Zw, Hw, dAw, Dw, Uw, streams, thr, keep, G,
                     loss_rows, loss_acc, correct_acc, t, scale, smoothing):
        # The dense step of a one-hidden-layer network (feature-major, reference.dense_views), its hidden
        # units split into `parts` blocks, one per thread. Each block's part of the first layer's GEMMs is
        # one BLAS call (gemm: cblas.gemm_address) on its own thread, next to its bias, ReLU (dropout),
        # share of the logits and backward: two parallel loops instead of a parallel GEMM, a serial middle
        # and another parallel GEMM. Between them, on this thread: the logits (the blocks' sums in
        # order), softmax-CE and metrics. B is X.T (C-contiguous) or, with trans_b, X itself.
        m, n0 = X.shape
        nc = G.shape[1]
        zero = scale - scale
        one = scale / scale  # 1 in the dtype (scale is 1/m)
        drop = streams.shape[0] > 0
        w0, w1, w2 = n1 * n0, n1 * n0 + n1, n1 * n0 + n1 + nc * n1
        W0, b0, W1, b1 = P[:w0].reshape((n1, n0)), P[w0:w1], P[w1:w2].reshape((nc, n1)), P[w2:]
        dW0, db0, dW1, db1 = Gr[:w0].reshape((n1, n0)), Gr[w0:w1], Gr[w1:w2].reshape((nc, n1)), Gr[w2:]
        h = m * n1
        Z, H, dA = Zw[:h].reshape((n1, m)), Hw[:h].reshape((n1, m)), dAw[:h].reshape((n1, m))
        A = Dw[:h].reshape((n1, m)) if drop else H  # the output layer's input
        U = Uw[:h].reshape((n1, m)) if drop else np.empty((0, m), dtype=G.dtype)  # no rows: no mask
        Zl = Zw[h : h + m * nc].reshape((m, nc))
        LT = np.empty((parts, nc, m), dtype=G.dtype)
        size = (n1 + parts - 1) // parts
        for p in numba.prange(parts):
            r0, r1 = min(p * size, n1), min((p + 1) * size, n1)
            _blas_gemm(gemm, W0[r0:r1], B, Z[r0:r1], trans_b, one, zero)
            if drop:
                _fm_bias_relu(Z[r0:r1], b0[r0:r1], H[r0:r1], zero)
                _fm_dropout(H[r0:r1], A[r0:r1], U[r0:r1], streams[0], thr, keep, zero, r0, n1)
                _fm_matmul(A[r0:r1], W1[:, r0:r1], LT[p], zero)
            else:
                _fm_bias_relu_logits(Z[r0:r1], b0[r0:r1], H[r0:r1], W1[:, r0:r1], LT[p], zero)
        for c in range(nc):
            for i in range(m):
                s = LT[0, c, i]
                for p in range(1, parts):
                    s += LT[p, c, i]
                Zl[i, c] = s
        _dense_output(Zl, b1, labels, G, loss_rows, loss_acc, correct_acc, t, scale, smoothing)
        _bias_grad(G, db1)
        dZ = np.empty((nc, m), dtype=G.dtype)
        _transpose(G, dZ)
        for p in numba.prange(parts):
            r0, r1 = min(p * size, n1), min((p + 1) * size, n1)
            _fm_backward(dZ, A[r0:r1], W1[:, r0:r1], dW1[:, r0:r1], dA[r0:r1], U[r0:r1], Z[r0:r1], db0[r0:r1], zero)
            _blas_gemm(gemm, dA[r0:r1], X, dW0[r0:r1], False, one, zero)


def _adam_threads() -> int:
    """Threads for the Adam kernel: inside a training run, the count the BLAS policy set for Numba;
    elsewhere :func:`xpnet.ops.threads.numba_threads` (which reads the environment, too slow for every step)."""
    n = numba.get_num_threads()
    return n if threads.policy_active() else threads.numba_threads(n)


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


# The one-call dense step when every layer after the first is at most this many multiply-adds
# per sample (Σ_{l≥1} n_l·n_{l+1}): there a step of many small calls is per-call overhead. Wider
# later layers run on BLAS between small kernels (_dense_middle_blas).
DENSE_STEP_MAX_MACS = 4096
# The first hidden layer's GEMMs run feature-major (Z0 = W0 @ X.T) from this width: OpenBLAS does
# them faster than X @ W0.T at 120 and 1024 units, slower at 10 (then the product is transposed).
FEATURE_MAJOR_MIN = 64
# A later layer's weight gradient is computed transposed up to this many outputs: OpenBLAS writes
# a (1024, 10) product much faster than a (10, 1024) one, and as fast at 256 or 64 inputs
# (bench/results/cpu-2core-2026-11-30-dense/).
NARROW = 16
# From this many units in the last hidden layer (and a NARROW output), without dropout, the middle's
# BLAS path computes the logits in the hidden layer's bias-and-ReLU kernel (_fm_bias_relu_logits), one
# pass over the layer instead of two: the step took 0.98-0.99x at 512 and 1024 units, 1.005x at 64,
# where the layer fits in L1 (bench/results/cpu-2core-2026-12-01-logits/).
FUSED_LOGITS_MIN = 256
# The first layer's GEMM X @ W0.T with at least this many units (and fewer than FEATURE_MAJOR_MIN)
# runs in a Numba kernel (_rows_matmul) where the BLAS policy never splits it: on one thread
# OpenBLAS's packed GEMM takes up to twice the kernel's time (at 10 units); with fewer units its
# small-matrix path is as fast (bench/results/cpu-2core-2026-11-30-narrow/).
NARROW_ROWS_MIN = 10


# A one-hidden-layer network's step is split into blocks of at least this many hidden units, one per
# thread (_dense_split), where the BLAS policy would give its first GEMM more than one thread.
SPLIT_MIN_UNITS = 4


def dense_step_fits(sizes, m, dtype) -> bool:
    """True for ReLU networks in a float dtype, with Numba."""
    return AVAILABLE and np.dtype(dtype) in _FLOATS


@functools.lru_cache(maxsize=64)
def _dense_plan(sizes: tuple) -> tuple:
    """Per network, once: the sizes as the kernels' int64 array, whether the first GEMM writes rows
    (then transposed), and the middle of the step (one Numba call, or BLAS between small kernels)."""
    later = sum(int(a) * int(b) for a, b in zip(sizes[1:-1], sizes[2:]))
    rows_first = len(sizes) == 2 or int(sizes[1]) < FEATURE_MAJOR_MIN
    return np.asarray(sizes, dtype=np.int64), rows_first, (_dense_middle if later <= DENSE_STEP_MAX_MACS else
                                                           _dense_middle_blas)


def dense_step_transposed(sizes) -> bool:
    """Whether :func:`dense_step` takes the batch transposed too (``XT``): its first GEMM runs
    feature-major, and OpenBLAS does ``W0 @ XT`` faster than ``W0 @ X.T`` (it packs X.T itself)
    by more than a transpose costs when the trainer makes it on the side core."""
    return AVAILABLE and not _dense_plan(tuple(sizes))[1]


def dense_step(X, labels, params, grads, sizes, Z, H, dA, G, loss_rows, loss_acc, correct_acc, t, smoothing=0.0,
               dropout_rate=0.0, seed=0, D=None, U=None, XT=None):
    """The reference's dense step in its buffer layout: the first layer's two GEMMs on BLAS, and
    between them one Numba kernel for small later layers, or BLAS and small kernels for wide ones;
    one hidden layer split by units over the threads the BLAS policy gives its GEMMs (``_dense_split``)."""
    labels = np.asarray(labels)
    sizes = tuple(sizes)
    m = X.shape[0]
    ok = (
        _fast(X, params, grads, Z, G, loss_rows) and (H.size == 0 or _fast(X, H, dA)) and X.ndim == 2 and m > 0
        and labels.dtype.kind in "iu" and labels.shape == X.shape[:1] and sizes[0] == X.shape[1]
        and loss_acc.dtype == np.float64 and G.shape == (m, sizes[-1])
        and (not dropout_rate or H.size == 0 or (D is not None and U is not None and _fast(X, D, U)))
        and isinstance(t, np.ndarray) and t.size == 1 and t.dtype.kind in "iu"
    )
    if not ok:
        return reference.dense_step(X, labels, params, grads, sizes, Z, H, dA, G, loss_rows, loss_acc, correct_acc,
                                    t, smoothing, dropout_rate, seed, D, U, XT)
    sizes_arr, rows_first, middle = _dense_plan(sizes)
    n0, n1, L = int(sizes[0]), int(sizes[1]), len(sizes) - 1
    W0, dW0 = params[: n1 * n0].reshape(n1, n0), grads[: n1 * n0].reshape(n1, n0)
    dt = X.dtype.type
    if dropout_rate and L > 1:  # masks drawn at step t, before step_metrics advances it (as the op-by-op step)
        step = reference._count(t)
        streams = np.array([reference.dropout_stream(seed, step, l) for l in range(L - 1)], dtype=np.uint64)
        thr, keep = np.uint64(reference.dropout_threshold(dropout_rate)), dt(1.0 / (1.0 - dropout_rate))
    else:  # no streams: the kernels never read D, U (any array of the dtype stands in)
        D = U = H
        streams, thr, keep = _NO_STREAMS, np.uint64(0), dt(1.0)
    gemm = cblas.gemm_address(X.dtype.name) if L == 2 and not rows_first else 0
    parts = min(threads.split_parts(m, n1, n0), n1 // SPLIT_MIN_UNITS) if gemm else 1
    if parts > 1:
        transposed = XT is not None and _fast(X, XT) and XT.shape == (n0, m)
        _dense_split(parts, gemm, X, XT if transposed else X, not transposed, labels, params, grads, n1, Z, H, dA, D,
                     U, streams, thr, keep, G, loss_rows, loss_acc, correct_acc, t, dt(1.0 / m), dt(smoothing))
        return loss_rows
    if rows_first:  # the logits (no hidden layer), or into dA's first block, scratch until the backward
        R = (Z if L == 1 else dA)[: m * n1].reshape(m, n1)
        if n1 >= NARROW_ROWS_MIN and threads.never_split(m, n1, n0):
            threads.one_thread_next()
            _rows_matmul(X, W0, R, dt(0))
        else:
            matmul(X, W0, R, trans_b=True)
    elif XT is not None and _fast(X, XT) and XT.shape == (n0, m):
        matmul(W0, XT, Z[: m * n1].reshape(n1, m))
    else:
        matmul(W0, X, Z[: m * n1].reshape(n1, m), trans_b=True)
    middle(rows_first, labels, params, grads, sizes_arr, Z, H, dA, D, U, streams, thr, keep, G, loss_rows, loss_acc,
           correct_acc, t, dt(1.0 / m), dt(smoothing))
    if L == 1:
        matmul(G, X, dW0, trans_a=True)
    else:
        matmul(dA[: m * n1].reshape(n1, m), X, dW0)
    return loss_rows


_NO_STREAMS = np.empty(0, dtype=np.uint64)


def _dense_middle_blas(rows_first, labels, params, grads, sizes, Z, H, dA, D, U, streams, thr, keep, G, loss_rows,
                       loss_acc, correct_acc, t, scale, smoothing):
    """:func:`_dense_middle` for wide later layers (two or more layers): their GEMMs on BLAS,
    feature-major (``Z_l = W_l @ A``, ``dW_l = dZ_l @ A.T``, ``dA = W_l.T @ dZ_l``), but for the logits
    of a narrow output layer after a wide hidden one without dropout (:data:`FUSED_LOGITS_MIN`)."""
    zero = scale - scale
    m = G.shape[0]
    drop = streams.size > 0
    v = reference.dense_views(params, grads, sizes, m, Z, H, dA, D if drop else None, U if drop else None)
    L = len(v.W)
    inputs = v.D if drop else v.H  # each later layer's input, (m, n) views of feature-major blocks
    logits_t = G.reshape(G.shape[1], m)  # G's memory, written only after the logits
    # Without dropout, a narrow output layer's GEMM rides along a wide last hidden layer's bias and ReLU.
    fused = not drop and G.shape[1] <= NARROW and int(sizes[-2]) >= FUSED_LOGITS_MIN and not (L == 2 and rows_first)
    for l in range(L - 1):
        if l == 0 and rows_first:
            _fm_from_rows(v.dA[0].T.reshape(m, -1), v.b[0], v.Z[0].T, v.H[0].T, zero)
        else:
            if l > 0:
                matmul(v.W[l], inputs[l - 1].T, v.Z[l].T)
            if fused and l == L - 2:
                threads.one_thread_next()  # no GEMM call here to start a waiting side job
                _fm_bias_relu_logits(v.Z[l].T, v.b[l], v.H[l].T, v.W[-1], logits_t, zero)
                continue
            _fm_bias_relu(v.Z[l].T, v.b[l], v.H[l].T, zero)
        if drop:
            _fm_dropout(v.H[l].T, v.D[l].T, v.U[l].T, streams[l], thr, keep, zero, 0, v.H[l].shape[1])
    if not fused:
        matmul(v.W[-1], inputs[-1].T, logits_t)
    _transpose(logits_t, v.Z[-1])
    _dense_output(v.Z[-1], v.b[-1], labels, G, loss_rows, loss_acc, correct_acc, t, scale, smoothing)
    _bias_grad(G, v.db[-1])
    dZ = G.T
    no_mask = np.empty((0, 0), dtype=G.dtype)
    for l in range(L - 1, 0, -1):  # dW_l, then dZ_{l-1} and db_{l-1}
        if dZ.shape[0] <= NARROW:  # dW_l.T, then transposed: OpenBLAS writes the (n_in, n_out) product faster
            dWt = np.empty(v.dW[l].shape[::-1], v.dW[l].dtype)
            matmul(inputs[l - 1].T, dZ, dWt, trans_b=True)
            _transpose(dWt, v.dW[l])
        else:
            matmul(dZ, inputs[l - 1].T, v.dW[l], trans_b=True)
        matmul(v.W[l], dZ, v.dA[l - 1].T, trans_a=True)
        _fm_relu_backward(v.dA[l - 1].T, v.U[l - 1].T if drop else no_mask, v.Z[l - 1].T, v.db[l - 1], zero)
        dZ = v.dA[l - 1].T


def dropout(H, D, U, rate, seed, t, layer):
    """Inverted dropout, counter-based masks (the reference's hash), one pass."""
    if not (_fast(H, D, U) and H.ndim == 2 and D.shape == U.shape == H.shape):
        return reference.dropout(H, D, U, rate, seed, t, layer)
    stream = np.uint64(reference.dropout_stream(seed, reference._count(t), layer))
    dt = H.dtype.type
    _dropout(H, D, U, stream, np.uint64(reference.dropout_threshold(rate)), dt(1.0 / (1.0 - rate)), dt(0))
    return D


def gather_batch(X, y, perm, t, t0, batch_size, Xb, yb):
    """The reference's gather, then a hint to fetch the next batch's rows (``perm[o + m : o + 2m]``)
    into cache while this step computes: each row is a random read from memory, and at 784-10-10
    the gather waited on them for a quarter of the step. Bad rows raise the reference's error."""
    ok = (
        _fast(X, Xb) and X.ndim == 2 and Xb.ndim == 2 and Xb.shape[1] == X.shape[1] and perm.ndim == 1
        and isinstance(y, np.ndarray) and isinstance(yb, np.ndarray) and y.ndim == yb.ndim == 1
        and y.dtype == yb.dtype and y.dtype.kind in "iu" and perm.dtype.kind in "iu"
        and y.shape[0] == X.shape[0] and yb.shape[0] == Xb.shape[0]
        and all(isinstance(c, np.ndarray) and c.size == 1 and c.dtype.kind in "iu" for c in (t, t0))
    )
    if not ok or not _gather_batch(X, y, perm, t.reshape(1), t0.reshape(1), int(batch_size), Xb, yb):
        return reference.gather_batch(X, y, perm, t, t0, batch_size, Xb, yb)
    return Xb


# One NumPy or BLAS call already, or not on the hot path: no Numba kernel (not measured), the reference.
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

    The bias corrections are computed here in float64 and cast once, as the reference's
    Python-float arithmetic does. One division fewer than the reference (PyTorch's formula): the
    square root is multiplied by ``1/√(1-β2^t)`` instead of divided by ``√(1-β2^t)``, which moves the
    denominator by an ulp or two at most (two roundings instead of one). The kernel is bound by its
    divisions and square root, and this takes 13–20 % off its time
    (bench/results/cpu-2core-2026-11-30-split/README.md).
    """
    if not (_fast(p, g, m, v) and p.ndim == 1 and p.shape == g.shape == m.shape == v.shape):
        return reference.adam_step(p, g, m, v, t, lr, beta1, beta2, eps)
    t = reference.check_step(t)
    lr = reference.step_lr(lr, t)
    bc1 = 1.0 - beta1**t
    bc2 = 1.0 - beta2**t
    dt = p.dtype.type
    args = (dt(lr / bc1), dt(beta1), dt(1.0 - beta1), dt(beta2), dt(1.0 - beta2), dt(eps), dt(1.0 / bc2**0.5))
    n_threads = _adam_threads()
    if n_threads == 1 or p.shape[0] < _PARALLEL_MIN:
        _adam_serial(p, g, m, v, *args)
        return p
    threads.claim_cores(n_threads)
    if n_threads == numba.get_num_threads():  # always, inside a training run (ops/threads.py sets it)
        _adam(p, g, m, v, *args)
    else:  # set_num_threads is per calling thread in Numba: nothing global changes
        saved = numba.get_num_threads()
        numba.set_num_threads(n_threads)
        try:
            _adam(p, g, m, v, *args)
        finally:
            numba.set_num_threads(saved)
    return p
