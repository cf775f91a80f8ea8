"""The CUDA ops against the NumPy reference, plus their launch helpers, validation and source lookup.

The kernel tests take ``kernel_device`` (tests/conftest.py): each runs on the CPU emulator of
the real ``kernels/*.cu`` (tests/cuda_emulator.py) with threads in lane order and in reverse
order, so CI checks every kernel, and on a real GPU when CuPy sees one."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import gpu

from xpnet.backend import to_numpy
from xpnet.errors import ConfigError, ShapeError
from xpnet.ops import cuda, reference

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
TOL = {np.float32: (1e-6, 1e-7), np.float64: (1e-12, 1e-15)}
SHAPES = [(1, 1), (1, 10), (7, 1), (5, 10), (3, 1023), (64, 1024), (1000, 10)]
DTYPES = [np.float32, np.float64]
ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)


# ---- CPU-runnable --------------------------------------------------------------------


def test_grid_1d():
    assert cuda._grid_1d(0) == (1,)
    assert cuda._grid_1d(1) == (1,)
    assert cuda._grid_1d(256) == (1,)
    assert cuda._grid_1d(257) == (2,)
    assert cuda._grid_1d(814_090) == (3181,)
    assert cuda._grid_1d(10**9) == (cuda.MAX_BLOCKS,)  # grid-stride loop covers the rest
    with pytest.raises(ValueError):
        cuda._grid_1d(-1)


def test_rows_per_block_and_row_grid():
    assert cuda._rows_per_block(256) == 8
    assert cuda._rows_per_block(32) == 1
    assert cuda._grid_rows(1) == (1,)
    assert cuda._grid_rows(8) == (1,)
    assert cuda._grid_rows(9) == (2,)
    assert cuda._grid_rows(60_000) == (7500,)
    with pytest.raises(ValueError):
        cuda._rows_per_block(100)


def test_bias_grad_launch_matches_kernel_constant():
    assert cuda._bias_grad_launch(10) == ((1,), (32, cuda.BIAS_ROWS))
    assert cuda._bias_grad_launch(1024) == ((32,), (32, cuda.BIAS_ROWS))
    assert cuda._bias_grad_launch(1025)[0] == (33,)
    source = (KERNELS / "relu.cu").read_text()
    assert re.search(rf"#define BIAS_ROWS {cuda.BIAS_ROWS}\b", source)


def test_kernel_names_cover_every_source_file():
    assert sorted(cuda.KERNEL_NAMES) == sorted(p.name for p in KERNELS.glob("*.cu"))
    for name in cuda.KERNEL_NAMES:
        text = cuda.kernel_source(name)
        assert "#include" not in text  # NVRTC gets the text alone, with no include path
        for kernel in cuda.KERNEL_NAMES[name]:
            assert re.search(rf"__global__ void {kernel}\(", text), kernel


def test_validation_errors_without_a_gpu():
    f32, f64 = np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float64)
    with pytest.raises(ConfigError, match="one dtype"):
        cuda.bias_relu_forward(f32, np.zeros(3, np.float64), f32.copy())
    with pytest.raises(ConfigError, match="float32 and float64"):
        cuda.relu_backward(f32.astype(np.float16), f32.astype(np.float16), f32.astype(np.float16))
    with pytest.raises(ShapeError, match="b has shape"):
        cuda.bias_relu_forward(f64, np.zeros(2), f64.copy())
    with pytest.raises(ShapeError, match="contiguous"):
        cuda.relu_backward(f64.T, f64.T, f64.T.copy())
    with pytest.raises(ShapeError, match="2-D"):
        cuda.bias_grad(np.zeros(3), np.zeros(3))
    with pytest.raises(ShapeError, match="labels"):
        cuda.softmax_xent(f32, np.zeros(3, np.int64), f32, np.zeros(4, np.float32), 0.25)
    with pytest.raises(ConfigError, match="integer"):
        cuda.softmax_xent(f32, np.zeros(4, np.float32), f32, np.zeros(4, np.float32), 0.25)
    with pytest.raises(ShapeError, match="flat"):
        cuda.adam_step(f32, f32, f32, f32, 1, **ADAM)
    with pytest.raises(ShapeError, match="m has shape"):
        p = np.zeros(5)
        cuda.adam_step(p, p, np.zeros(4), p, 1, **ADAM)
    with pytest.raises(ConfigError, match="CuPy arrays"):  # host arrays never reach a kernel
        cuda.relu_backward(f32, f32, f32)
    with pytest.raises(ConfigError, match="device int32"):
        cuda.increment_step(np.zeros(1, np.int32))


def test_module_imports_without_cupy():
    # ``import xpnet.ops.cuda`` must not import CuPy (the CPU suite relies on it).
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "import xpnet.ops.cuda as c\n"
        "assert c._grid_1d(10) == (1,)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(KERNELS.parent))


# ---- kernels: emulated on the CPU, and on a GPU when there is one ---------------------
# ``kernel_device.xp`` is NumPy under the emulator and CuPy on a GPU; ``to_numpy`` brings a result home.

FULL_ADAM_N = 814_090  # the 784-1024-10 parameter count: GPU only (about 1 s per emulated step)


def _close(actual, expected, dtype, scale=1.0, terms=1):
    rtol, atol = TOL[dtype]
    grow = max(1.0, math.sqrt(terms) / 2)
    np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), rtol=rtol * grow, atol=atol * scale * grow)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bias_relu_forward(kernel_device, rng, dtype, shape):
    xp = kernel_device.xp
    Z = xp.asarray(rng.standard_normal(shape).astype(dtype))
    b = xp.asarray(rng.standard_normal(shape[1]).astype(dtype))
    Z1, A1, Z2, A2 = Z.copy(), xp.empty_like(Z), Z.copy(), xp.empty_like(Z)
    assert cuda.bias_relu_forward(Z1, b, A1) is A1
    reference.bias_relu_forward(Z2, b, A2)
    np.testing.assert_array_equal(to_numpy(Z1), to_numpy(Z2))
    np.testing.assert_array_equal(to_numpy(A1), to_numpy(A2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_relu_backward_and_in_place(kernel_device, rng, dtype, shape):
    xp = kernel_device.xp
    dA = xp.asarray(rng.standard_normal(shape).astype(dtype))
    Z = xp.asarray(rng.standard_normal(shape).astype(dtype))
    Z[0, 0] = 0.0  # the boundary: the mask is Z > 0, so a zero blocks the gradient
    expected = xp.empty_like(Z)
    reference.relu_backward(dA, Z, expected)
    out = xp.empty_like(Z)
    cuda.relu_backward(dA, Z, out)
    np.testing.assert_array_equal(to_numpy(out), to_numpy(expected))
    alias = dA.copy()
    assert cuda.relu_backward(alias, Z, alias) is alias
    np.testing.assert_array_equal(to_numpy(alias), to_numpy(expected))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(4096, 3), (37, 33)])
def test_bias_grad(kernel_device, rng, dtype, shape):
    xp = kernel_device.xp
    dZ = xp.asarray(rng.standard_normal(shape).astype(dtype))
    db = xp.empty(shape[1], dtype)
    cuda.bias_grad(dZ, db)
    # the kernel sums in float64: compare with an exact-ish float64 sum
    _close(db, to_numpy(dZ).astype(np.float64).sum(axis=0), dtype, scale=shape[0], terms=shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("label_dtype", [np.int32, np.int64, np.uint8])
def test_softmax_xent(kernel_device, rng, dtype, shape, label_dtype):
    xp = kernel_device.xp
    m, k = shape
    if label_dtype is np.uint8 and k > 255:
        pytest.skip("uint8 labels only index up to 255 classes")
    Z = xp.asarray((rng.standard_normal(shape) * 4).astype(dtype))
    y = xp.asarray(rng.integers(0, k, m).astype(label_dtype))
    dZ1, L1 = xp.empty_like(Z), xp.empty(m, dtype)
    dZ2, L2 = xp.empty_like(Z), xp.empty(m, dtype)
    assert cuda.softmax_xent(Z.copy(), y, dZ1, L1, 1.0 / m) is L1
    reference.softmax_xent(Z.copy(), y.astype(xp.int64), dZ2, L2, 1.0 / m)
    _close(L1, L2, dtype, scale=10, terms=k)
    _close(dZ1, dZ2, dtype, scale=1.0 / m, terms=k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_in_place_extremes_and_bad_label(kernel_device, dtype):
    xp = kernel_device.xp
    Z = xp.asarray(np.array([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype))
    y = xp.asarray(np.array([0, 1, 2, 1], np.int32))
    loss = xp.empty(4, dtype)
    cuda.softmax_xent(Z, y, Z, loss, 0.25)  # dZ is Z
    assert bool(xp.isfinite(Z).all()) and bool(xp.isfinite(loss).all())
    np.testing.assert_allclose(to_numpy(loss), [0.0, 2e4, math.log(3), math.log(2)], rtol=1e-6, atol=1e-6)
    expected = np.array([[0, 0, 0], [1, -1, 0], [1 / 3, 1 / 3, -2 / 3], [0.5, -0.5, 0]]) * 0.25
    np.testing.assert_allclose(to_numpy(Z), expected, atol=1e-7)
    bad = xp.zeros((2, 3), dtype)
    loss = xp.empty(2, dtype)
    cuda.softmax_xent(bad, xp.asarray(np.array([0, 7], np.int32)), bad, loss, 1.0)
    assert np.isfinite(to_numpy(loss)[0]) and np.isnan(to_numpy(loss)[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_wide_rows_in_place(kernel_device, rng, dtype):
    # k > 32: every lane loops; in place, the picked logit must be read before any lane writes.
    xp = kernel_device.xp
    m, k = 9, 100
    Z0 = (rng.standard_normal((m, k)) * 30).astype(dtype)
    y = rng.integers(0, k, m)
    dZ, L = np.empty_like(Z0), np.empty(m, dtype)
    reference.softmax_xent(Z0.copy(), y, dZ, L, 1.0 / m)
    Z = xp.asarray(Z0)
    loss = xp.empty(m, dtype)
    cuda.softmax_xent(Z, xp.asarray(y.astype(np.int32)), Z, loss, 1.0 / m)
    _close(loss, L, dtype, scale=10, terms=k)
    _close(Z, dZ, dtype, scale=1.0 / m, terms=k)


def _adam_pair(xp, rng, dtype, n):
    p = rng.standard_normal(n).astype(dtype)
    ours = [xp.asarray(p), xp.zeros(n, dtype), xp.zeros(n, dtype)]
    ref = [p.copy(), np.zeros(n, dtype), np.zeros(n, dtype)]
    return ours, ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 17, 70_001, FULL_ADAM_N])
def test_adam_t_as_int(kernel_device, rng, dtype, n):
    if n == FULL_ADAM_N and kernel_device.name != "cuda":
        pytest.skip("full-size Adam runs on the GPU only (70,001 covers the grid-stride loop when emulated)")
    xp = kernel_device.xp
    ours, ref = _adam_pair(xp, rng, dtype, n)
    for t in (1, 2, 3):
        g = (rng.standard_normal(n) * 0.1).astype(dtype)
        assert cuda.adam_step(ours[0], xp.asarray(g), ours[1], ours[2], t, **ADAM) is ours[0]
        reference.adam_step(ref[0], g, ref[1], ref[2], t, **ADAM)
    for a, b in zip(ours, ref):
        _close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_t_on_device_with_increment(kernel_device, rng, dtype):
    xp = kernel_device.xp
    n = 10_000
    ours, ref = _adam_pair(xp, rng, dtype, n)
    t = xp.ones(1, xp.int32)
    for step in (1, 2, 3):
        g = (rng.standard_normal(n) * 0.1).astype(dtype)
        cuda.adam_step(ours[0], xp.asarray(g), ours[1], ours[2], t, **ADAM)
        cuda.increment_step(t)
        reference.adam_step(ref[0], g, ref[1], ref[2], step, **ADAM)
    assert int(to_numpy(t)[0]) == 4
    for a, b in zip(ours, ref):
        _close(a, b, dtype)


def test_adam_rejects_bad_device_t(kernel_device):
    xp = kernel_device.xp
    p = xp.zeros(4, xp.float32)
    with pytest.raises(ConfigError, match="int32"):
        cuda.adam_step(p, p, p.copy(), p.copy(), xp.ones(1, xp.int64), **ADAM)
    with pytest.raises(ConfigError, match="t >= 1"):
        cuda.adam_step(p, p, p.copy(), p.copy(), 0, **ADAM)


# ---- the CUDA-graph step's kernels (kernels/graph_step.cu) ----------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bs, nf", [(1, 1), (3, 5), (64, 784), (7, 300)])
def test_gather_batch(kernel_device, rng, dtype, bs, nf):
    xp = kernel_device.xp
    n = 3 * bs + 2
    X = rng.standard_normal((n, nf)).astype(dtype)
    y = rng.integers(0, 10, n).astype(np.int32)
    perm = rng.permutation(n).astype(np.int64)
    Xd, yd, permd = xp.asarray(X), xp.asarray(y), xp.asarray(perm)
    Xb, yb = xp.full((bs, nf), np.nan, dtype), xp.full(bs, -1, np.int32)
    offset = xp.zeros(1, np.int32)
    for step in range(3):  # the offset advances on the device, as in the captured step
        cuda.gather_batch(Xd, yd, permd, offset, Xb, yb)
        rows = perm[step * bs:(step + 1) * bs]
        np.testing.assert_array_equal(to_numpy(Xb), X[rows])
        np.testing.assert_array_equal(to_numpy(yb), y[rows])
        cuda.advance_offset(offset, bs)
    assert int(to_numpy(offset)[0]) == 3 * bs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 10), (3, 1023), (130, 7)])
def test_bias_add_matches_broadcast_add(kernel_device, rng, dtype, shape):
    xp = kernel_device.xp
    Z = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    expected = Z + b
    Zd = xp.asarray(Z.copy())
    assert cuda.bias_add(Zd, xp.asarray(b)) is Zd
    np.testing.assert_array_equal(to_numpy(Zd), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k", [(1, 1), (5, 10), (300, 10), (64, 3)])
def test_step_metrics_accumulates_loss_and_correct(kernel_device, rng, dtype, m, k):
    xp = kernel_device.xp
    loss_acc, correct_acc = xp.asarray(np.array([0.5])), xp.asarray(np.array([7], np.int64))
    expected_loss, expected_correct = 0.5, 7
    for _ in range(2):
        Z = rng.standard_normal((m, k)).astype(dtype)
        if k > 1:
            Z[0, :2] = Z[0, :2].max()  # a tie: the first maximum counts, like argmax
        y = rng.integers(0, k, m).astype(np.int32)
        y[: m // 2] = Z[: m // 2].argmax(axis=1)  # some right answers
        losses = rng.random(m).astype(dtype)
        cuda.step_metrics(xp.asarray(Z), xp.asarray(y), xp.asarray(losses), loss_acc, correct_acc)
        expected_loss += losses.astype(np.float64).sum()
        expected_correct += int((Z.argmax(axis=1) == y).sum())
    assert int(to_numpy(correct_acc)[0]) == expected_correct
    np.testing.assert_allclose(to_numpy(loss_acc)[0], expected_loss, rtol=1e-13)


def test_step_metrics_nan_logit_is_the_argmax(kernel_device):
    xp = kernel_device.xp
    Z = np.array([[0.0, np.nan, 5.0], [np.nan, 1.0, 2.0], [1.0, 3.0, 2.0]])
    y = np.array([1, 0, 1], np.int32)  # cupy/numpy argmax: 1, 0, 1
    assert list(Z.argmax(axis=1)) == [1, 0, 1]
    loss_acc, correct_acc = xp.zeros(1, np.float64), xp.zeros(1, np.int64)
    cuda.step_metrics(xp.asarray(Z), xp.asarray(y), xp.zeros(3), loss_acc, correct_acc)
    assert int(to_numpy(correct_acc)[0]) == 3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 255, 70_001])
def test_l2_grad(kernel_device, rng, dtype, n):
    xp = kernel_device.xp
    W = rng.standard_normal(n).astype(dtype)
    dW = rng.standard_normal(n).astype(dtype)
    l2, m = 0.01, 64
    expected_dW = dW.copy()
    expected_dW += dtype(l2 / m) * W  # what xpnet/model.py does: the coefficient cast to the dtype first
    dWd, loss_acc = xp.asarray(dW), xp.asarray(np.array([1.0]))
    cuda.l2_grad(dWd, xp.asarray(W), l2 / m, loss_acc, l2 / 2)
    np.testing.assert_array_equal(to_numpy(dWd), expected_dW)
    expected_loss = 1.0 + l2 / 2 * (W.astype(np.float64) ** 2).sum()
    np.testing.assert_allclose(to_numpy(loss_acc)[0], expected_loss, rtol=1e-12)


# ---- GPU only: CUDA-graph capture -----------------------------------------------------


@gpu
def test_adam_in_a_cuda_graph(rng):
    # One capture serves every step because t is read on the device.
    cp = pytest.importorskip("cupy")
    n = 4096
    ours, ref = _adam_pair(cp, rng, np.float32, n)
    g_dev = cp.asarray((rng.standard_normal(n) * 0.1).astype(np.float32))
    t = cp.ones(1, cp.int32)
    cuda.load_all()
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        cuda.adam_step(ours[0], g_dev, ours[1], ours[2], t, **ADAM)
        cuda.increment_step(t)
        graph = stream.end_capture()
        for _ in range(3):
            graph.launch(stream)
        stream.synchronize()
    g = g_dev.get()
    for step in (1, 2, 3):
        reference.adam_step(ref[0], g, ref[1], ref[2], step, **ADAM)
    assert int(t.get()[0]) == 4
    for a, b in zip(ours, ref):
        _close(a, b, np.float32)
