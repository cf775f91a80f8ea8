"""The CUDA ops against the reference (GPU only), plus their CPU-testable parts:
launch-configuration helpers, argument validation and source lookup."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import gpu

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


# ---- GPU ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


def _close(actual, expected, dtype, scale=1.0, terms=1):
    rtol, atol = TOL[dtype]
    grow = max(1.0, math.sqrt(terms) / 2)
    np.testing.assert_allclose(cuda_get(actual), cuda_get(expected), rtol=rtol * grow, atol=atol * scale * grow)


def cuda_get(x):
    return x.get() if hasattr(x, "get") else np.asarray(x)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bias_relu_forward_gpu(cp, rng, dtype, shape):
    Z = cp.asarray(rng.standard_normal(shape).astype(dtype))
    b = cp.asarray(rng.standard_normal(shape[1]).astype(dtype))
    Z1, A1, Z2, A2 = Z.copy(), cp.empty_like(Z), Z.copy(), cp.empty_like(Z)
    assert cuda.bias_relu_forward(Z1, b, A1) is A1
    reference.bias_relu_forward(Z2, b, A2)
    np.testing.assert_array_equal(Z1.get(), Z2.get())
    np.testing.assert_array_equal(A1.get(), A2.get())


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_relu_backward_gpu_and_in_place(cp, rng, dtype, shape):
    dA = cp.asarray(rng.standard_normal(shape).astype(dtype))
    Z = cp.asarray(rng.standard_normal(shape).astype(dtype))
    expected = cp.empty_like(Z)
    reference.relu_backward(dA, Z, expected)
    out = cp.empty_like(Z)
    cuda.relu_backward(dA, Z, out)
    np.testing.assert_array_equal(out.get(), expected.get())
    alias = dA.copy()
    assert cuda.relu_backward(alias, Z, alias) is alias
    np.testing.assert_array_equal(alias.get(), expected.get())


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(4096, 3)])
def test_bias_grad_gpu(cp, rng, dtype, shape):
    dZ = cp.asarray(rng.standard_normal(shape).astype(dtype))
    db = cp.empty(shape[1], dtype)
    cuda.bias_grad(dZ, db)
    # the kernel sums in float64: compare with an exact-ish float64 sum
    _close(db, dZ.get().astype(np.float64).sum(axis=0), dtype, scale=shape[0], terms=shape[0])


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("label_dtype", [np.int32, np.int64, np.uint8])
def test_softmax_xent_gpu(cp, rng, dtype, shape, label_dtype):
    m, k = shape
    if label_dtype is np.uint8 and k > 255:
        pytest.skip("uint8 labels only index up to 255 classes")
    Z = cp.asarray((rng.standard_normal(shape) * 4).astype(dtype))
    y = cp.asarray(rng.integers(0, k, m).astype(label_dtype))
    dZ1, L1 = cp.empty_like(Z), cp.empty(m, dtype)
    dZ2, L2 = cp.empty_like(Z), cp.empty(m, dtype)
    assert cuda.softmax_xent(Z.copy(), y, dZ1, L1, 1.0 / m) is L1
    reference.softmax_xent(Z.copy(), y.astype(cp.int64), dZ2, L2, 1.0 / m)
    _close(L1, L2, dtype, scale=10, terms=k)
    _close(dZ1, dZ2, dtype, scale=1.0 / m, terms=k)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_gpu_in_place_extremes_and_bad_label(cp, dtype):
    Z = cp.asarray(np.array([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype))
    y = cp.asarray(np.array([0, 1, 2, 1], np.int32))
    loss = cp.empty(4, dtype)
    cuda.softmax_xent(Z, y, Z, loss, 0.25)  # dZ is Z
    assert bool(cp.isfinite(Z).all()) and bool(cp.isfinite(loss).all())
    np.testing.assert_allclose(loss.get(), [0.0, 2e4, math.log(3), math.log(2)], rtol=1e-6, atol=1e-6)
    expected = np.array([[0, 0, 0], [1, -1, 0], [1 / 3, 1 / 3, -2 / 3], [0.5, -0.5, 0]]) * 0.25
    np.testing.assert_allclose(Z.get(), expected, atol=1e-7)
    bad = cp.zeros((2, 3), dtype)
    loss = cp.empty(2, dtype)
    cuda.softmax_xent(bad, cp.asarray(np.array([0, 7], np.int32)), bad, loss, 1.0)
    assert np.isfinite(loss.get()[0]) and np.isnan(loss.get()[1])


def _adam_pair(cp, rng, dtype, n):
    p = rng.standard_normal(n).astype(dtype)
    ours = [cp.asarray(p), cp.zeros(n, dtype), cp.zeros(n, dtype)]
    ref = [p.copy(), np.zeros(n, dtype), np.zeros(n, dtype)]
    return ours, ref


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 17, 814_090])
def test_adam_gpu_t_as_int(cp, rng, dtype, n):
    ours, ref = _adam_pair(cp, rng, dtype, n)
    for t in (1, 2, 3):
        g = (rng.standard_normal(n) * 0.1).astype(dtype)
        assert cuda.adam_step(ours[0], cp.asarray(g), ours[1], ours[2], t, **ADAM) is ours[0]
        reference.adam_step(ref[0], g, ref[1], ref[2], t, **ADAM)
    for a, b in zip(ours, ref):
        _close(a, b, dtype)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_gpu_t_on_device_with_increment(cp, rng, dtype):
    n = 10_000
    ours, ref = _adam_pair(cp, rng, dtype, n)
    t = cp.ones(1, cp.int32)
    for step in (1, 2, 3):
        g = (rng.standard_normal(n) * 0.1).astype(dtype)
        cuda.adam_step(ours[0], cp.asarray(g), ours[1], ours[2], t, **ADAM)
        cuda.increment_step(t)
        reference.adam_step(ref[0], g, ref[1], ref[2], step, **ADAM)
    assert int(t.get()[0]) == 4
    for a, b in zip(ours, ref):
        _close(a, b, dtype)


@gpu
def test_adam_gpu_rejects_bad_device_t(cp):
    p = cp.zeros(4, cp.float32)
    with pytest.raises(ConfigError, match="int32"):
        cuda.adam_step(p, p, p.copy(), p.copy(), cp.ones(1, cp.int64), **ADAM)
    with pytest.raises(ConfigError, match="t >= 1"):
        cuda.adam_step(p, p, p.copy(), p.copy(), 0, **ADAM)


@gpu
def test_adam_gpu_in_a_cuda_graph(cp, rng):
    # One capture serves every step because t is read on the device.
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
