"""The Numba ops against the reference, and the reference against hand-written formulas."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from xpnet.ops import reference

# (rtol, atol) per dtype: a few ulps of the values compared.
TOL = {np.float32: (1e-6, 1e-7), np.float64: (1e-12, 1e-15)}
SHAPES = [(1, 1), (1, 10), (7, 1), (5, 10), (3, 1023), (64, 1024)]
DTYPES = [np.float32, np.float64]
ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)


@pytest.fixture(scope="module")
def cpu():
    pytest.importorskip("numba")
    from xpnet.ops import cpu

    assert cpu.AVAILABLE
    return cpu


def _close(actual, expected, dtype, scale=1.0, terms=1):
    """``terms``: length of the sums behind the values (their order may differ: ~sqrt(n) ulps)."""
    rtol, atol = TOL[dtype]
    grow = max(1.0, math.sqrt(terms) / 2)
    np.testing.assert_allclose(actual, expected, rtol=rtol * grow, atol=atol * scale * grow)


# ---- the reference against independent formulas ---------------------------------------


def test_reference_softmax_xent_matches_explicit_loop(rng):
    Z = rng.standard_normal((6, 5)) * 3
    y = rng.integers(0, 5, 6)
    dZ, loss = np.empty_like(Z), np.empty(6)
    reference.softmax_xent(Z.copy(), y, dZ, loss, 0.5)
    for i in range(6):
        row = [float(z) for z in Z[i]]
        top = max(row)
        lse = top + math.log(sum(math.exp(z - top) for z in row))
        assert loss[i] == pytest.approx(lse - row[y[i]], rel=1e-13)
        for j in range(5):
            soft = math.exp(row[j] - lse)
            assert dZ[i, j] == pytest.approx((soft - (j == y[i])) * 0.5, rel=1e-12, abs=1e-15)


def test_reference_adam_hand_computed_first_step():
    # p=1, g=0.5, lr=0.1, b1=0.9, b2=0.999, eps=1e-8, t=1:
    # m = 0.1*0.5 = 0.05, v = 0.001*0.25 = 0.00025, bc1 = 0.1, bc2 = 0.001
    # m_hat = 0.5, sqrt(v_hat) = 0.5  ->  p = 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.9 + 2e-9 (to 1e-16)
    p, g, m, v = np.ones(1), np.full(1, 0.5), np.zeros(1), np.zeros(1)
    reference.adam_step(p, g, m, v, 1, 0.1, 0.9, 0.999, 1e-8)
    assert m[0] == pytest.approx(0.05, rel=1e-15)
    assert v[0] == pytest.approx(0.00025, rel=1e-12)
    assert p[0] == pytest.approx(1 - 0.1 * 0.5 / (0.5 + 1e-8), rel=1e-15)
    assert p[0] == pytest.approx(0.900000002, rel=1e-12)


def test_reference_adam_accepts_t_as_array():
    args = [np.ones(3), np.full(3, 0.5), np.zeros(3), np.zeros(3)]
    other = [a.copy() for a in args]
    reference.adam_step(*args, 4, **ADAM)
    reference.adam_step(*other, np.array([4], dtype=np.int32), **ADAM)
    np.testing.assert_array_equal(args[0], other[0])


# ---- Numba against the reference ------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bias_relu_forward(cpu, rng, dtype, shape):
    Z = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    Z1, A1, Z2, A2 = Z.copy(), np.empty_like(Z), Z.copy(), np.empty_like(Z)
    assert cpu.bias_relu_forward(Z1, b, A1) is A1
    reference.bias_relu_forward(Z2, b, A2)
    np.testing.assert_array_equal(Z1, Z2)  # one add and one compare: bit-identical
    np.testing.assert_array_equal(A1, A2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_relu_backward_and_in_place(cpu, rng, dtype, shape):
    dA = rng.standard_normal(shape).astype(dtype)
    Z = rng.standard_normal(shape).astype(dtype)
    expected = np.empty_like(Z)
    reference.relu_backward(dA, Z, expected)
    out = np.empty_like(Z)
    cpu.relu_backward(dA, Z, out)
    np.testing.assert_array_equal(out, expected)
    alias = dA.copy()
    assert cpu.relu_backward(alias, Z, alias) is alias
    np.testing.assert_array_equal(alias, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bias_grad(cpu, rng, dtype, shape):
    dZ = rng.standard_normal(shape).astype(dtype)
    db = np.empty(shape[1], dtype)
    cpu.bias_grad(dZ, db)
    _close(db, dZ.sum(axis=0), dtype, scale=shape[0], terms=shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
def test_softmax_xent(cpu, rng, dtype, shape, label_dtype):
    m, k = shape
    Z = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.integers(0, k, m).astype(label_dtype)
    dZ1, L1 = np.empty_like(Z), np.empty(m, dtype)
    dZ2, L2 = np.empty_like(Z), np.empty(m, dtype)
    assert cpu.softmax_xent(Z.copy(), y, dZ1, L1, 1.0 / m) is L1
    reference.softmax_xent(Z.copy(), y, dZ2, L2, 1.0 / m)
    _close(L1, L2, dtype, scale=10, terms=k)
    _close(dZ1, dZ2, dtype, scale=1.0 / m, terms=k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_in_place_and_extreme_logits(cpu, dtype):
    Z = np.array([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype)
    y = np.array([0, 1, 2, 1])
    loss = np.empty(4, dtype)
    out = cpu.softmax_xent(Z, y, Z, loss, 0.25)  # dZ is Z
    assert np.isfinite(Z).all() and np.isfinite(loss).all()
    np.testing.assert_allclose(loss, [0.0, 2e4, math.log(3), math.log(2)], rtol=1e-6, atol=1e-6)
    expected = np.array([[0, 0, 0], [1, -1, 0], [1 / 3, 1 / 3, -2 / 3], [0.5, -0.5, 0]]) * 0.25
    np.testing.assert_allclose(Z, expected, atol=1e-7)
    assert out is loss


def test_softmax_xent_rejects_out_of_range_labels(cpu):
    Z = np.zeros((2, 3), np.float32)
    with pytest.raises(IndexError):
        cpu.softmax_xent(Z, np.array([0, 3]), Z, np.empty(2, np.float32), 0.5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 17, 814_090])
def test_adam_steps_match_reference(cpu, rng, dtype, n):
    p = rng.standard_normal(n).astype(dtype)
    ours = [p, np.zeros(n, dtype), np.zeros(n, dtype)]
    ref = [p.copy(), np.zeros(n, dtype), np.zeros(n, dtype)]
    for t in (1, 2, 3):
        g = (rng.standard_normal(n) * 0.1).astype(dtype)
        assert cpu.adam_step(ours[0], g, ours[1], ours[2], t, **ADAM) is ours[0]
        reference.adam_step(ref[0], g, ref[1], ref[2], t, **ADAM)
    for a, b in zip(ours, ref):
        _close(a, b, dtype)


def test_adam_t_as_array_and_fallbacks(cpu, rng):
    n = 64
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    a = [p.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)]
    b = [p.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)]
    cpu.adam_step(a[0], g, a[1], a[2], np.array([2], np.int32), **ADAM)
    reference.adam_step(b[0], g, b[1], b[2], 2, **ADAM)
    _close(a[0], b[0], np.float32)
    # a strided view and float16 are not kernel inputs: they fall back to the reference
    c = np.zeros(2 * n, np.float32)
    cpu.adam_step(c[::2], g, np.zeros(n, np.float32), np.zeros(n, np.float32), 1, **ADAM)
    assert c[1::2].max() == 0 and c[::2].any()
    h = np.ones(4, np.float16)
    cpu.adam_step(h, h.copy(), np.zeros(4, np.float16), np.zeros(4, np.float16), 1, **ADAM)
    assert h.dtype == np.float16 and (h < 1).all()


def test_module_imports_without_numba():
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np\n"
        "from xpnet.ops import cpu, get_ops, reference\n"
        "assert cpu.AVAILABLE is False and get_ops(np) is reference\n"
        "p = np.ones(3); cpu.adam_step(p, p.copy(), np.zeros(3), np.zeros(3), 1, 0.1, 0.9, 0.999, 1e-8)\n"
        "Z = np.ones((2, 3)); A = np.empty_like(Z); cpu.bias_relu_forward(Z, np.ones(3), A)\n"
        "db = np.empty(3); cpu.bias_grad(Z, db); assert (db == 4).all()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(_repo()))


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]
