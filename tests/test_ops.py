"""The ops contract: one test body per op, run over every implementation.

``impl`` is the reference (NumPy), Numba (``ops/cpu.py``), the real ``kernels/*.cu`` through
``ops/cuda.py`` on the CPU emulator (threads in lane order and reversed, so races show), and
a real GPU when CuPy sees one — as thinc's ``tests/backends/test_ops.py`` runs over all its
Ops. Expected values come from independent float64 formulas (not from the reference), so the
reference is tested too.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import has_cuda

from xpnet.backend import to_numpy
from xpnet.errors import ConfigError, DataError
from xpnet.ops import reference

DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (1, 10), (7, 1), (5, 10), (3, 1023), (64, 1024), (1000, 10)]
ADAM = dict(beta1=0.9, beta2=0.999, eps=1e-8)


@dataclass
class Impl:
    name: str
    xp: object
    ops: object

    def __repr__(self):
        return self.name


@pytest.fixture(params=["reference", "cpu", "emulated", "emulated-reversed", "cuda"])
def impl(request, monkeypatch):
    if request.param == "reference":
        return Impl("reference", np, reference)
    if request.param == "cpu":
        pytest.importorskip("numba")
        from xpnet.ops import cpu

        return Impl("cpu", np, cpu)
    from xpnet.ops import cuda

    if request.param == "cuda":
        if not has_cuda():
            pytest.skip("needs CuPy and a CUDA device")
        import cupy

        return Impl("cuda", cupy, cuda)
    from tools.cuda_emulator import install

    emulator = request.getfixturevalue("cuda_emulator")
    emulator.reverse = request.param == "emulated-reversed"
    install(monkeypatch, emulator)
    return Impl(request.param, np, cuda)


def close(actual, expected, dtype, scale=1.0, terms=1):
    """float64 expectations: float32 results within a few ulps per summed term."""
    rtol, atol = (3e-6, 3e-7) if dtype == np.float32 else (1e-12, 1e-15)
    grow = max(1.0, math.sqrt(terms))
    np.testing.assert_allclose(to_numpy(actual), expected, rtol=rtol * grow, atol=atol * scale * grow)


# ---- independent formulas ---------------------------------------------------------------


def softmax_xent_expected(Z, y, scale, smoothing):
    Z = Z.astype(np.float64)
    m, k = Z.shape
    top = Z.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(Z - top).sum(axis=1))
    q = np.full((m, k), smoothing / k)
    q[np.arange(m), y] += 1.0 - smoothing
    return lse - (q * Z).sum(axis=1), (np.exp(Z - lse[:, None]) - q) * scale


def adam_expected(p, grads, lrs, beta1, beta2, eps):
    p, m, v = p.astype(np.float64), np.zeros(p.size), np.zeros(p.size)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**t) * m / (np.sqrt(v) / math.sqrt(1 - beta2**t) + eps)
    return p, m, v


# ---- element-wise and reductions ----------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bias_relu_forward(impl, rng, dtype, shape):
    xp = impl.xp
    Z = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    Zd, A = xp.array(Z), xp.full(shape, np.nan, dtype)
    assert impl.ops.bias_relu_forward(Zd, xp.array(b), A) is A
    np.testing.assert_array_equal(to_numpy(Zd), Z + b)  # one rounding: bit-exact everywhere
    np.testing.assert_array_equal(to_numpy(A), np.maximum(Z + b, 0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_relu_backward_and_in_place(impl, rng, dtype, shape):
    xp = impl.xp
    dA = rng.standard_normal(shape).astype(dtype)
    Z = rng.standard_normal(shape).astype(dtype)
    expected = dA * (Z > 0)
    out = xp.full(shape, np.nan, dtype)
    impl.ops.relu_backward(xp.array(dA), xp.array(Z), out)
    np.testing.assert_array_equal(to_numpy(out), expected)
    same = xp.array(dA)
    impl.ops.relu_backward(same, xp.array(Z), same)  # dZ is dA
    np.testing.assert_array_equal(to_numpy(same), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(4096, 3), (37, 33)])
def test_bias_grad(impl, rng, dtype, shape):
    xp = impl.xp
    dZ = rng.standard_normal(shape).astype(dtype)
    db = xp.full(shape[1], np.nan, dtype)
    assert impl.ops.bias_grad(xp.array(dZ), db) is db
    close(db, dZ.astype(np.float64).sum(axis=0), dtype, scale=1.0, terms=shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 10), (3, 1023), (130, 7)])
def test_bias_add(impl, rng, dtype, shape):
    xp = impl.xp
    Z = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    Zd = xp.array(Z)
    assert impl.ops.bias_add(Zd, xp.array(b)) is Zd
    np.testing.assert_array_equal(to_numpy(Zd), Z + b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True)])
def test_matmul(impl, rng, dtype, trans_a, trans_b):
    xp = impl.xp
    A = rng.standard_normal((7, 5) if not trans_a else (5, 7)).astype(dtype)
    B = rng.standard_normal((5, 3) if not trans_b else (3, 5)).astype(dtype)
    C = xp.full((7, 3), np.nan, dtype)
    impl.ops.matmul(xp.array(A), xp.array(B), C, trans_a=trans_a, trans_b=trans_b)
    expected = (A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B).astype(np.float64)
    close(C, expected, dtype, terms=5)


# ---- softmax cross-entropy ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_xent(impl, rng, dtype, shape, smoothing):
    xp = impl.xp
    m, k = shape
    Z = (rng.standard_normal(shape) * 3).astype(dtype)
    y = rng.integers(0, k, m)
    dZ, loss = xp.full(shape, np.nan, dtype), xp.full(m, np.nan, dtype)
    assert impl.ops.softmax_xent(xp.array(Z), xp.array(y.astype(np.int32)), dZ, loss, 1.0 / m, smoothing) is loss
    want_loss, want_dZ = softmax_xent_expected(Z, y, 1.0 / m, smoothing)
    close(loss, want_loss, dtype, scale=10, terms=k)
    close(dZ, want_dZ, dtype, scale=1.0 / m, terms=k)


@pytest.mark.parametrize("label_dtype", [np.int64, np.uint8])
def test_softmax_xent_other_label_dtypes(impl, rng, label_dtype):
    xp = impl.xp
    Z = rng.standard_normal((9, 10))
    y = rng.integers(0, 10, 9)
    dZ, loss = xp.empty((9, 10)), xp.empty(9)
    impl.ops.softmax_xent(xp.array(Z), xp.array(y.astype(label_dtype)), dZ, loss, 0.5, 0.2)
    want_loss, want_dZ = softmax_xent_expected(Z, y, 0.5, 0.2)
    close(loss, want_loss, np.float64, terms=10)
    close(dZ, want_dZ, np.float64, terms=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_in_place_and_extreme_logits(impl, dtype):
    xp = impl.xp
    Z = xp.array(np.array([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype))
    y = xp.array(np.array([0, 1, 2, 1], np.int32))
    loss = xp.empty(4, dtype)
    impl.ops.softmax_xent(Z, y, Z, loss, 0.25)  # dZ is Z
    assert bool(xp.isfinite(Z).all()) and bool(xp.isfinite(loss).all())
    np.testing.assert_allclose(to_numpy(loss), [0.0, 2e4, math.log(3), math.log(2)], rtol=1e-6, atol=1e-6)
    expected = np.array([[0, 0, 0], [1, -1, 0], [1 / 3, 1 / 3, -2 / 3], [0.5, -0.5, 0]]) * 0.25
    np.testing.assert_allclose(to_numpy(Z), expected, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_softmax_xent_wide_rows_in_place(impl, rng, dtype, smoothing):
    # k > 32: every lane loops; in place, everything read from the row precedes any write.
    xp = impl.xp
    m, k = 9, 100
    Z0 = (rng.standard_normal((m, k)) * 30).astype(dtype)
    y = rng.integers(0, k, m)
    Z, loss = xp.array(Z0), xp.empty(m, dtype)
    impl.ops.softmax_xent(Z, xp.array(y.astype(np.int32)), Z, loss, 1.0 / m, smoothing)
    want_loss, want_dZ = softmax_xent_expected(Z0, y, 1.0 / m, smoothing)
    close(loss, want_loss, dtype, scale=100, terms=k)
    close(Z, want_dZ, dtype, scale=1.0 / m, terms=k)


def test_a_bad_label_is_a_data_error(impl):
    xp = impl.xp
    Z = xp.zeros((2, 3))
    for labels in ([0, 3], [-1, 0]):
        with pytest.raises(DataError, match=r"\[0, 2\]"):
            impl.ops.softmax_xent(Z, xp.array(np.array(labels, np.int32)), xp.empty((2, 3)), xp.empty(2), 0.5)
    if impl.ops is not reference and impl.name != "cpu":  # unchecked on the GPU: NaN, never a stray read
        loss = xp.empty(2)
        impl.ops.softmax_xent(Z, xp.array(np.array([0, 7], np.int32)), xp.empty((2, 3)), loss, 1.0, validate=False)
        assert np.isfinite(to_numpy(loss)[0]) and np.isnan(to_numpy(loss)[1])


# ---- the step's bookkeeping ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bs, nf", [(1, 1), (3, 5), (64, 784), (7, 300)])
def test_gather_batch_offset_from_the_step_count(impl, rng, dtype, bs, nf):
    xp = impl.xp
    n = 3 * bs + 2
    X = rng.standard_normal((n, nf)).astype(dtype)
    y = rng.integers(0, 10, n).astype(np.int32)
    perm = rng.permutation(n).astype(np.int64)
    Xd, yd, permd = xp.array(X), xp.array(y), xp.array(perm)
    t, t0 = xp.array(np.array([40], np.int32)), xp.array(np.array([40], np.int32))
    Xb, yb = xp.full((bs, nf), np.nan, dtype), xp.full(bs, -1, np.int32)
    for step in range(3):  # t advances on the device, as in the captured step
        impl.ops.gather_batch(Xd, yd, permd, t, t0, bs, Xb, yb)
        rows = perm[step * bs:(step + 1) * bs]
        np.testing.assert_array_equal(to_numpy(Xb), X[rows])
        np.testing.assert_array_equal(to_numpy(yb), y[rows])
        t += 1
    tail_X, tail_y = xp.full((2, nf), np.nan, dtype), xp.full(2, -1, np.int32)  # the epoch's short last batch
    impl.ops.gather_batch(Xd, yd, permd, t, t0, bs, tail_X, tail_y)
    np.testing.assert_array_equal(to_numpy(tail_X), X[perm[3 * bs:]])


def _refused(impl) -> bool:
    """True for the implementations that can raise (host code); a kernel refuses in its output."""
    return impl.ops is reference or impl.name == "cpu"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t, t0", [(40, 41), (42, 40), (43, 40), (10**6, 0)])
def test_gather_batch_refuses_rows_outside_the_permutation(impl, rng, dtype, t, t0):
    """A wrong t or t0 (e.g. graph replays past the epoch's end without resetting t0): the
    reference raises, and a kernel reads nothing outside perm: every row NaN, every label -1,
    not a partial batch (t - t0 = 2 here leaves 2 of 5 rows in range)."""
    xp = impl.xp
    bs, nf, n = 5, 3, 12
    X = rng.standard_normal((n, nf)).astype(dtype)
    y = rng.integers(0, 10, n).astype(np.int32)
    perm = rng.permutation(n).astype(np.int64)
    args = (xp.array(X), xp.array(y), xp.array(perm), xp.array(np.array([t], np.int32)),
            xp.array(np.array([t0], np.int32)), bs)
    Xb, yb = xp.full((bs, nf), 7.0, dtype), xp.full(bs, 7, np.int32)
    if _refused(impl):
        with pytest.raises(ConfigError, match="t or t0 is wrong"):
            impl.ops.gather_batch(*args, Xb, yb)
        return
    impl.ops.gather_batch(*args, Xb, yb)
    assert np.isnan(to_numpy(Xb)).all() and (to_numpy(yb) == -1).all()


def test_gather_batch_refuses_a_row_index_outside_x(impl, rng):
    xp = impl.xp
    X = rng.standard_normal((6, 4))
    y = np.arange(6, dtype=np.int32)
    perm = np.array([2, 6, 0, 1, 3, 4], np.int64)  # 6 is not a row of X
    Xb, yb = xp.full((3, 4), 7.0), xp.full(3, 7, np.int32)
    zero = xp.array(np.zeros(1, np.int32))
    args = (xp.array(X), xp.array(y), xp.array(perm), zero, zero, 3, Xb, yb)
    if _refused(impl):
        with pytest.raises(ConfigError, match="outside"):
            impl.ops.gather_batch(*args)
        return
    impl.ops.gather_batch(*args)
    np.testing.assert_array_equal(to_numpy(Xb)[[0, 2]], X[[2, 0]])
    assert np.isnan(to_numpy(Xb)[1]).all() and to_numpy(yb).tolist() == [2, -1, 0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k", [(1, 1), (5, 10), (300, 10), (64, 3)])
def test_step_metrics(impl, rng, dtype, m, k):
    xp = impl.xp
    loss_acc, correct_acc = xp.array(np.array([0.5])), xp.array(np.array([7], np.int64))
    t = xp.array(np.array([11], np.int32))
    expected_loss, expected_correct = 0.5, 7
    for _ in range(2):
        Z = rng.standard_normal((m, k)).astype(dtype)
        if k > 1:
            Z[0, :2] = Z[0, :2].max()  # a tie: the first maximum counts, like argmax
        y = rng.integers(0, k, m).astype(np.int32)
        y[: m // 2] = Z[: m // 2].argmax(axis=1)  # some right answers
        rows = rng.random(m).astype(dtype)
        impl.ops.step_metrics(xp.array(Z), xp.array(y), xp.array(rows), loss_acc, correct_acc, t)
        expected_loss += rows.astype(np.float64).sum()
        expected_correct += int((Z.argmax(axis=1) == y).sum())
    assert int(to_numpy(correct_acc)[0]) == expected_correct
    assert int(to_numpy(t)[0]) == 13
    np.testing.assert_allclose(to_numpy(loss_acc)[0], expected_loss, rtol=1e-13)


def test_step_metrics_nan_logit_is_the_argmax(impl):
    xp = impl.xp
    Z = np.array([[0.0, np.nan, 5.0], [np.nan, 1.0, 2.0], [1.0, 3.0, 2.0]])
    y = np.array([1, 0, 1], np.int32)  # numpy / cupy argmax: 1, 0, 1
    assert list(Z.argmax(axis=1)) == [1, 0, 1]
    loss_acc, correct_acc, t = xp.zeros(1, np.float64), xp.zeros(1, np.int64), xp.zeros(1, np.int32)
    impl.ops.step_metrics(xp.array(Z), xp.array(y), xp.zeros(3), loss_acc, correct_acc, t)
    assert int(to_numpy(correct_acc)[0]) == 3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 255, 70_001])
def test_l2_grad(impl, rng, dtype, n):
    xp = impl.xp
    W = rng.standard_normal(n).astype(dtype)
    dW = rng.standard_normal(n).astype(dtype)
    l2, m = 0.01, 64
    expected_dW = dW + dtype(l2 / m) * W  # the coefficient cast to the dtype first
    dWd, loss_acc = xp.array(dW), xp.array(np.array([1.0]))
    impl.ops.l2_grad(dWd, xp.array(W), l2 / m, loss_acc, l2 / 2)
    np.testing.assert_array_equal(to_numpy(dWd), expected_dW)
    expected_loss = 1.0 + l2 / 2 * (W.astype(np.float64) ** 2).sum()
    np.testing.assert_allclose(to_numpy(loss_acc)[0], expected_loss, rtol=1e-12 if dtype == np.float64 else 1e-5)


# ---- Adam -------------------------------------------------------------------------------------


def test_adam_hand_computed_first_step(impl):
    # p=1, g=0.5, lr=0.1, t=1: m = 0.05, v = 0.00025, m_hat = 0.5, sqrt(v_hat) = 0.5
    # -> p = 1 - 0.1 * 0.5 / (0.5 + 1e-8)
    xp = impl.xp
    p, g, m, v = xp.ones(1), xp.full(1, 0.5), xp.zeros(1), xp.zeros(1)
    impl.ops.adam_step(p, g, m, v, 1, 0.1, 0.9, 0.999, 1e-8)
    assert float(to_numpy(m)[0]) == pytest.approx(0.05, rel=1e-15)
    assert float(to_numpy(v)[0]) == pytest.approx(0.00025, rel=1e-12)
    assert float(to_numpy(p)[0]) == pytest.approx(1 - 0.1 * 0.5 / (0.5 + 1e-8), rel=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 17, 70_001])
def test_adam_steps_with_t_as_int(impl, rng, dtype, n):
    xp = impl.xp
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [(rng.standard_normal(n) * 0.1).astype(dtype) for _ in range(3)]
    p, m, v = xp.array(p0), xp.zeros(n, dtype), xp.zeros(n, dtype)
    for t, g in enumerate(grads, start=1):
        assert impl.ops.adam_step(p, xp.array(g), m, v, t, 1e-3, **ADAM) is p
    for got, want in zip((p, m, v), adam_expected(p0, grads, [1e-3] * 3, **ADAM)):
        close(got, want, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_reads_t_and_an_lr_schedule_from_device_memory(impl, rng, dtype):
    """What one captured graph needs: the step count and the learning rate both on the device."""
    xp = impl.xp
    n = 10_000
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [(rng.standard_normal(n) * 0.1).astype(dtype) for _ in range(3)]
    lrs = np.array([1e-2, 3e-3, 5e-4])
    p, m, v = xp.array(p0), xp.zeros(n, dtype), xp.zeros(n, dtype)
    t, table = xp.zeros(1, np.int32), xp.array(lrs)
    for g in grads:
        t += 1  # step_metrics' job inside the training step
        impl.ops.adam_step(p, xp.array(g), m, v, t, table, **ADAM)
    for got, want in zip((p, m, v), adam_expected(p0, grads, lrs, **ADAM)):
        close(got, want, dtype, scale=10)


@pytest.mark.parametrize("device_t", [False, True])
def test_adam_refuses_a_step_count_below_one(impl, device_t):
    """t = 0 would divide by 1 - beta^0 = 0 and read lrs[-1]: the host code raises; the kernel
    (device t) leaves m and v alone, reads no lr, and sets p to NaN so the run stops."""
    xp = impl.xp
    p, g, m, v = xp.ones(8), xp.full(8, 0.5), xp.full(8, 0.25), xp.full(8, 0.125)
    table = xp.array(np.array([1e-2, 1e-3]))
    t = xp.array(np.zeros(1, np.int32)) if device_t else 0
    if _refused(impl) or not device_t:
        with pytest.raises(ConfigError, match="t >= 1"):
            impl.ops.adam_step(p, g, m, v, t, table, **ADAM)
        return
    impl.ops.adam_step(p, g, m, v, t, table, **ADAM)
    assert np.isnan(to_numpy(p)).all()
    assert (to_numpy(m) == 0.25).all() and (to_numpy(v) == 0.125).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_past_the_lr_table_holds_its_last_rate(impl, rng, dtype):
    """A replay past the table's end (t > len(lrs)) uses the last rate in every implementation."""
    xp = impl.xp
    n = 300
    p0 = rng.standard_normal(n).astype(dtype)
    g = (rng.standard_normal(n) * 0.1).astype(dtype)
    lrs = np.array([1e-2, 3e-3, 5e-4])
    p, m, v = xp.array(p0), xp.zeros(n, dtype), xp.zeros(n, dtype)
    impl.ops.adam_step(p, xp.array(g), m, v, xp.array(np.array([5], np.int32)), xp.array(lrs), **ADAM)
    bc1, bc2 = 1 - ADAM["beta1"] ** 5, 1 - ADAM["beta2"] ** 5
    m1, v1 = (1 - ADAM["beta1"]) * g.astype(np.float64), (1 - ADAM["beta2"]) * g.astype(np.float64) ** 2
    expected = p0 - 5e-4 / bc1 * m1 / (np.sqrt(v1) / math.sqrt(bc2) + ADAM["eps"])
    close(p, expected, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_adam_serial_and_parallel_kernels_agree_bit_for_bit(rng, dtype):
    """adam_step picks the serial kernel (small buffers, one thread) or the parfor one: the same
    arithmetic per element, so a run's weights do not depend on which ran."""
    pytest.importorskip("numba")
    from xpnet.ops import cpu

    n = cpu._PARALLEL_MIN + 17
    p, g, m, v = ((rng.standard_normal(n) * s).astype(dtype) for s in (1.0, 0.1, 0.01, 0.001))
    v = np.abs(v)
    args = tuple(dtype(x) for x in (1e-3 / 0.1, 0.9, 0.1, 0.999, 0.001, 1e-8, 1.0 / 0.001**0.5))
    serial, parallel = [a.copy() for a in (p, m, v)], [a.copy() for a in (p, m, v)]
    cpu._adam_serial(serial[0], g, serial[1], serial[2], *args)
    cpu._adam(parallel[0], g, parallel[1], parallel[2], *args)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(serial[0], p)  # it stepped


@pytest.mark.parametrize("n", [3, 100_000])
def test_cpu_adam_divides_as_numpy_does(n):
    """eps = 0 with a zero gradient is 0/0: NaN as in the reference (NumPy's error model), not
    Python's ZeroDivisionError, on either kernel."""
    pytest.importorskip("numba")
    from xpnet.ops import cpu

    got, want = np.ones(n, np.float32), np.ones(n, np.float32)
    cpu.adam_step(got, np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32), 1, 0.1,
                  0.9, 0.999, 0.0)
    with np.errstate(invalid="ignore"):
        reference.adam_step(want, np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32), 1,
                            0.1, 0.9, 0.999, 0.0)
    assert np.isnan(want).all() and np.isnan(got).all()


# ---- one policy: what has no kernel falls back to the reference ---------------------------


def test_unsupported_dtype_or_layout_falls_back(impl, rng):
    xp = impl.xp
    Z = rng.standard_normal((6, 4))
    b = rng.standard_normal(4)
    strided = xp.array(np.zeros((6, 8)))[:, ::2]  # a strided view: no kernel takes it
    strided[...] = xp.array(Z)
    A = xp.empty((6, 4))
    impl.ops.bias_relu_forward(strided, xp.array(b), A)
    np.testing.assert_array_equal(to_numpy(A), np.maximum(Z + b, 0))
    half = xp.array(Z.astype(np.float16))
    db = xp.empty(4, np.float16)
    impl.ops.bias_grad(half, db)
    np.testing.assert_allclose(to_numpy(db), Z.astype(np.float16).sum(axis=0), rtol=1e-2)
    p = xp.ones(4, np.float16)
    impl.ops.adam_step(p, p.copy(), xp.zeros(4, np.float16), xp.zeros(4, np.float16), 1, 0.1, **ADAM)
    assert p.dtype == np.float16 and bool((p < 1).all())


# ---- each implementation's module imports without its optional library ---------------------


@pytest.mark.parametrize("blocked, module", [("numba", "cpu"), ("cupy", "cuda")])
def test_ops_modules_import_without_their_library(blocked, module):
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "import numpy as np\n"
        f"from xpnet.ops import {module} as impl, get_ops, reference\n"
        "names = list(reference.OPS + reference.COMPOSITES)\n"
        "assert len(names) == 15 and not [n for n in names if not hasattr(impl, n)], names\n"
    )
    if module == "cpu":
        code += (
            "assert impl.AVAILABLE is False and get_ops(np) is reference\n"
            "p = np.ones(3); impl.adam_step(p, p.copy(), np.zeros(3), np.zeros(3), 1, 0.1, 0.9, 0.999, 1e-8)\n"
            "db = np.empty(3); impl.bias_grad(np.ones((2, 3)), db); assert (db == 2).all()\n"
        )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(Path(__file__).resolve().parents[1]))


# ---- dropout: counter-based masks ------------------------------------------------------------


def _splitmix_keep(seed, t, layer, i, rate):
    """The mask bit from the docstring's formula, in Python integers (independent of NumPy's uint64)."""
    M = 2**64 - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)

    phi = 0x9E3779B97F4A7C15
    stream = mix((mix((seed * phi + t) & M) + layer * phi) & M)
    return (mix((stream + i * phi) & M) >> 40) >= round(rate * 2**24)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, rate", [((1, 1), 0.5), ((7, 33), 0.1), ((256, 1024), 0.2)])
def test_dropout_masks_follow_the_hash(impl, rng, dtype, shape, rate):
    xp = impl.xp
    H = rng.standard_normal(shape).astype(dtype)
    D, U = xp.full(shape, np.nan, dtype), xp.full(shape, np.nan, dtype)
    t = xp.array(np.array([7], np.int32))
    impl.ops.dropout(xp.array(H), D, U, rate, 12345, t, 2)
    Uh = to_numpy(U).reshape(-1)
    picks = np.unique(np.linspace(0, Uh.size - 1, 200).astype(int))
    expected = np.array([_splitmix_keep(12345, 7, 2, int(i), rate) for i in picks])
    np.testing.assert_array_equal(Uh[picks] != 0, expected)
    scale = dtype(1.0 / (1.0 - rate))
    assert set(np.unique(Uh)) <= {dtype(0), scale}
    np.testing.assert_array_equal(to_numpy(D), H * to_numpy(U))
    if Uh.size > 10_000:
        assert abs((Uh == 0).mean() - rate) < 0.01
    D2, U2 = xp.empty(shape, dtype), xp.empty(shape, dtype)
    impl.ops.dropout(xp.array(H), D2, U2, rate, 12345, t + 1, 2)  # the next step: another mask
    assert Uh.size < 64 or not np.array_equal(to_numpy(U2), to_numpy(U))
    dH = xp.array(H)
    impl.ops.dropout_backward(dH, U, dH)
    np.testing.assert_array_equal(to_numpy(dH), H * to_numpy(U))


# ---- the dense step (forward, softmax-CE, metrics, backward in one op) ------------------------


def dense_step_expected(X, y, Ws, bs, smoothing, masks=()):
    """float64 forward/backward of a ReLU MLP with mean softmax-CE, from scratch; ``masks``: the
    hidden layers' inverted-dropout multipliers (0 or 1/(1 - rate)), none without dropout."""
    A, inputs, Zs = X.astype(np.float64), [], []
    for l, (W, b) in enumerate(zip(Ws, bs)):
        inputs.append(A)
        Z = A @ W.astype(np.float64).T + b
        Zs.append(Z)
        A = np.maximum(Z, 0) * (masks[l] if masks else 1.0) if l < len(Ws) - 1 else Z
    rows, dZ = softmax_xent_expected(Zs[-1], y, 1.0 / len(X), smoothing)
    grads = []
    for l in range(len(Ws) - 1, -1, -1):
        grads = [dZ.T @ inputs[l], dZ.sum(axis=0)] + grads
        if l:
            dZ = (dZ @ Ws[l].astype(np.float64)) * (masks[l - 1] if masks else 1.0) * (Zs[l - 1] > 0)
    return rows, Zs[-1], grads


# The CPU's paths: one Numba call between the first layer's GEMMs (small later layers), BLAS between
# small kernels (wide ones: 70·80 + 80·6, 20·300 + 300·5 and 601·7 multiply-adds; without dropout and
# from cpu.FUSED_LOGITS_MIN units the narrow output layer's GEMM in the last hidden layer's ReLU kernel,
# 300 and 601 units, 601 leaving one over four), the
# first GEMM feature-major (96, 70, 601 units) or transposed after it (fewer units; from 10 in
# cpu._rows_matmul, here 10, 11 and 16 with rows and columns left over), and no hidden layer (7 outputs
# on BLAS, 13 in the kernel).
DENSE_SHAPES = [((784, 10, 10), 128), ((20, 7), 5), ((30, 16, 8, 4), 33), ((12, 10, 3), 1), ((50, 96, 8), 17),
                ((40, 70, 80, 6), 9), ((30, 20, 300, 5), 6), ((30, 601, 7), 5), ((25, 13), 7), ((9, 11, 4), 6)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, m", DENSE_SHAPES)
@pytest.mark.parametrize("smoothing, rate", [(0.0, 0.0), (0.1, 0.0), (0.1, 0.3)])
def test_dense_step(impl, rng, dtype, sizes, m, smoothing, rate):
    if not hasattr(impl.ops, "dense_step"):
        pytest.skip(f"{impl} composes the step op by op")
    check_dense_step(impl.ops, impl.xp, rng, dtype, sizes, m, smoothing, rate)


def check_dense_step(ops, xp, rng, dtype, sizes, m, smoothing, rate, transposed=True):
    """``ops.dense_step`` on a random network against float64 maths (``transposed``: given ``XT``
    where the ops read it)."""
    Ws = [rng.standard_normal((b, a)).astype(dtype) / math.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [rng.standard_normal(b).astype(dtype) * 0.1 for b in sizes[1:]]
    params = np.concatenate([v for W, b in zip(Ws, bs) for v in (W.ravel(), b)])
    X = rng.standard_normal((m, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], m).astype(np.int32)
    grads = xp.array(np.full(params.size, np.nan, dtype))  # every gradient must be written
    hidden = sum(sizes[1:-1])
    Z, H, dA, D, U = (xp.empty(m * sum(sizes[1:]), dtype), *(xp.empty(m * hidden, dtype) for _ in range(4)))
    G, rows = xp.empty((m, sizes[-1]), dtype), xp.empty(m, dtype)
    loss_acc, correct_acc = xp.array(np.array([0.25])), xp.array(np.array([3], np.int64))
    t = xp.array(np.array([4], np.int32))
    XT = xp.array(np.ascontiguousarray(X.T)) if transposed and ops.dense_step_transposed(sizes) else None
    ops.dense_step(xp.array(X), xp.array(y), xp.array(params), grads, sizes, Z, H, dA, G, rows, loss_acc,
                   correct_acc, t, smoothing, rate, 77, D, U, XT)
    # The masks the op-by-op step draws at step 4 (its counter before the step), layer by layer.
    masks = []
    for l, n in enumerate(sizes[1:-1] if rate else ()):
        keep = np.empty((m, n), dtype)
        reference.dropout(np.ones((m, n), dtype), np.empty((m, n), dtype), keep, rate, 77, 4, l)
        masks.append(keep.astype(np.float64))
    exp_rows, logits, exp_grads = dense_step_expected(X, y, Ws, bs, smoothing, masks)
    terms = max(sizes)
    close(rows, exp_rows, dtype, terms=terms)
    np.testing.assert_allclose(to_numpy(loss_acc)[0], 0.25 + exp_rows.sum(), rtol=1e-4 if dtype == np.float32 else 1e-10)
    assert int(to_numpy(correct_acc)[0]) == 3 + int((logits.argmax(axis=1) == y).sum())
    assert int(to_numpy(t)[0]) == 5
    got = to_numpy(grads)
    np.testing.assert_allclose(got, np.concatenate([g.ravel() for g in exp_grads]),
                               rtol=1e-4 if dtype == np.float32 else 1e-9, atol=1e-5 if dtype == np.float32 else 1e-12)


# A one-hidden-layer step split into blocks of hidden units, one per thread (cpu._dense_split), where a
# training run's BLAS policy would split its first GEMM: 2 and 3 blocks, even and uneven (601 units in
# 201 + 201 + 199), with and without the batch transposed.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, m", [((50, 96, 8), 17), ((30, 601, 7), 5), ((784, 128, 10), 64)])
@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("smoothing, rate, transposed", [(0.0, 0.0, True), (0.1, 0.3, True), (0.1, 0.0, False)])
def test_split_dense_step(rng, monkeypatch, dtype, sizes, m, parts, smoothing, rate, transposed):
    pytest.importorskip("numba")
    from xpnet.ops import cblas, cpu, threads

    assert cblas.gemm_address(np.dtype(dtype).name), "NumPy's OpenBLAS gemm not found: the split step never runs"
    monkeypatch.setattr(threads, "split_parts", lambda m, n, k: parts)
    calls, split = [], cpu._dense_split
    monkeypatch.setattr(cpu, "_dense_split", lambda *a: calls.append(a[0]) or split(*a))
    check_dense_step(cpu, np, rng, dtype, sizes, m, smoothing, rate, transposed)
    assert calls == [parts]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_b", [False, True])
def test_blas_gemm_from_numba_is_numpys_product(rng, dtype, trans_b):
    """The split step's GEMM: NumPy's own OpenBLAS called from a Numba kernel, on views whose rows are
    strided (the leading dimensions passed on), against float64 maths."""
    pytest.importorskip("numba")
    from xpnet.ops import cblas, cpu

    gemm = cblas.gemm_address(np.dtype(dtype).name)
    assert gemm
    A = rng.standard_normal((9, 40)).astype(dtype)[:, 3:33]  # (9, 30), rows 40 apart
    if trans_b:
        B = rng.standard_normal((7, 45)).astype(dtype)[:, 5:35]  # (7, 30)
    else:
        B = rng.standard_normal((30, 50)).astype(dtype)[:, :7]  # (30, 7)
    C = np.full((12, 20), np.nan, dtype)[2:11, 4:11]
    cpu._blas_gemm(gemm, A, B, C, trans_b, dtype(1), dtype(0))
    close(C, A.astype(np.float64) @ (B.T if trans_b else B).astype(np.float64), dtype, terms=30)


def test_blas_gemm_address_is_zero_where_numpys_blas_is_not_its_openblas(monkeypatch):
    from xpnet.ops import cblas

    assert cblas.gemm_address("float16") == 0
    monkeypatch.setattr(cblas, "_numpy_openblas_paths", lambda: [])
    cblas.gemm_address.cache_clear()
    try:
        assert cblas.gemm_address("float32") == 0
    finally:
        cblas.gemm_address.cache_clear()


def test_dense_step_reads_the_transposed_batch_where_it_says_so(rng):
    """Where ``dense_step_transposed`` is true, the first GEMM reads ``XT`` (here deliberately not
    X.T, to see which one it read); elsewhere ``XT`` is not asked for."""
    pytest.importorskip("numba")
    from xpnet.ops import cpu

    assert cpu.dense_step_transposed((784, 1024, 10)) and cpu.dense_step_transposed((50, 96, 8))
    assert not cpu.dense_step_transposed((784, 10, 10)) and not cpu.dense_step_transposed((784, 10))
    assert not reference.dense_step_transposed((784, 1024, 10))
    sizes, m = (20, 96, 5), 6
    params = rng.standard_normal(sum(b * (a + 1) for a, b in zip(sizes[:-1], sizes[1:]))).astype(np.float32)
    X = rng.standard_normal((m, sizes[0])).astype(np.float32)
    XT = np.ascontiguousarray(2 * X.T)
    Z, H, dA = np.empty(m * sum(sizes[1:]), np.float32), np.empty(m * 96, np.float32), np.empty(m * 96, np.float32)
    cpu.dense_step(X, np.zeros(m, np.int32), params, np.empty_like(params), sizes, Z, H, dA,
                   np.empty((m, sizes[-1]), np.float32), np.empty(m, np.float32), np.zeros(1), np.zeros(1, np.int64),
                   np.zeros(1, np.int32), XT=XT)
    v = reference.dense_views(params, params, sizes, m, Z, H, dA)
    np.testing.assert_allclose(v.Z[0], (2 * X) @ v.W[0].T + v.b[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n, k", [(128, 10, 784), (1, 10, 12), (33, 16, 30), (7, 13, 25), (6, 11, 1), (4, 2, 5)])
def test_rows_matmul_kernel_is_the_product(rng, dtype, m, n, k):
    """The first layer's narrow GEMM (X @ W.T) in Numba: every block and leftover row and column."""
    pytest.importorskip("numba")
    from xpnet.ops import cpu

    X, W = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((n, k)).astype(dtype)
    R = np.full((m, n), np.nan, dtype)
    cpu._rows_matmul(X, W, R, dtype(0))
    close(R, X.astype(np.float64) @ W.astype(np.float64).T, dtype, terms=k)


# (units, samples, outputs): blocks of four units with even and odd outputs, units left over (1-3), and
# outputs in passes of eight, four, two and one (13 = 8 + 4 + 1, 7 = 4 + 2 + 1, 16 = 8 + 8).
FM_SHAPES = [(12, 128, 10), (11, 5, 13), (6, 3, 1), (9, 7, 7), (4, 1, 16), (3, 2, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, m, c", FM_SHAPES)
@pytest.mark.parametrize("masked", [False, True])
def test_feature_major_kernels_are_the_products(rng, dtype, n, m, c, masked):
    """The one-call middle's GEMM kernels, every block and leftover: ``_fm_matmul`` (ZT = W @ AT)
    and ``_fm_backward`` (dW, the masked dA and its row sums) against float64 maths."""
    pytest.importorskip("numba")
    from xpnet.ops import cpu

    AT, ZT = rng.standard_normal((n, m)).astype(dtype), rng.standard_normal((n, m)).astype(dtype)
    W, dZT = rng.standard_normal((c, n)).astype(dtype), rng.standard_normal((c, m)).astype(dtype)
    U = ((rng.random((n, m)) < 0.7) / 0.7).astype(dtype) if masked else np.empty((0, 0), dtype)
    out = np.full((c, m), np.nan, dtype)
    cpu._fm_matmul(AT, W, out, dtype(0))
    close(out, W.astype(np.float64) @ AT, dtype, terms=n)
    dW, dAT, db = np.full((c, n), np.nan, dtype), np.full((n, m), np.nan, dtype), np.full(n, np.nan, dtype)
    cpu._fm_backward(dZT, AT, W, dW, dAT, U, ZT, db, dtype(0))
    dA = (W.T.astype(np.float64) @ dZT) * (U if masked else 1.0) * (ZT > 0)
    close(dW, dZT.astype(np.float64) @ AT.T, dtype, terms=m)
    close(dAT, dA, dtype, terms=c)
    close(db, dA.sum(axis=1), dtype, terms=c * m)


def test_dense_step_fits_float_networks_with_numba_only():
    from xpnet.ops import cpu

    assert not reference.dense_step_fits((784, 10, 10), 128, np.float32)
    if cpu.AVAILABLE:
        assert cpu.dense_step_fits((784, 10, 10), 128, np.float32)
        assert cpu.dense_step_fits((784, 1024, 10), 128, np.float64)
        assert not cpu.dense_step_fits((784, 10, 10), 128, np.float16)


@pytest.mark.parametrize("hidden, dropout", [([16], 0.0), ([80, 70], 0.0), ([16], 0.2), ([80, 70], 0.2)])
def test_mlp_takes_the_dense_step_where_it_fits_with_the_reference_results(rng, hidden, dropout):
    pytest.importorskip("numba")
    from xpnet.nn.model import MLP, StepCounters

    X = rng.standard_normal((40, 30)).astype(np.float32)
    y = rng.integers(0, 4, 40).astype(np.int32)
    sizes = [30, *hidden, 4]
    fast, ref = (MLP(sizes, seed=1, label_smoothing=0.1, dropout=dropout, fast_ops=fast_ops) for fast_ops in (True, False))
    assert fast._dense_step_fits(len(X)) and not ref._dense_step_fits(len(X))
    counters = [StepCounters(np, t=6), StepCounters(np, t=6)]
    for net, c in zip((fast, ref), counters):
        net.train_step(X, y, c)
    np.testing.assert_allclose(fast.flat_grads, ref.flat_grads, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(counters[0].loss, counters[1].loss, rtol=1e-5)
    assert counters[0].correct[0] == counters[1].correct[0] and counters[0].t[0] == counters[1].t[0] == 7
    # The cached activations read by the init study and the demo, whatever layout the dense step keeps,
    # and with dropout the same masks as the op-by-op step (drawn at step 6).
    for key in ("Z", "H") + (("D", "U") if dropout else ()):
        for got, want in zip(fast._cache[0][key], ref._cache[0][key], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
