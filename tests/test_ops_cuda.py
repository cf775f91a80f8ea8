"""What is particular to ``ops/cuda.py``: launch configurations, argument checks, source lookup,
and a capture on a real GPU. The kernels themselves are tested against the contract, with
every other implementation, in tests/test_ops.py (emulated on the CPU, and on a GPU)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import gpu

from xpnet.errors import ConfigError, ShapeError
from xpnet.ops import cuda, reference

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
ADAM = dict(beta1=0.9, beta2=0.999, eps=1e-8)


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
    with pytest.raises(ShapeError, match="b has shape"):
        cuda.bias_relu_forward(f64, np.zeros(2), f64.copy())
    with pytest.raises(ShapeError, match="2-D"):
        cuda.bias_grad(np.zeros(3), np.zeros(3))
    with pytest.raises(ShapeError, match="labels"):
        cuda.softmax_xent(f32, np.zeros(3, np.int64), f32, np.zeros(4, np.float32), 0.25)
    with pytest.raises(ConfigError, match="integer"):
        cuda.softmax_xent(f32, np.zeros(4, np.float32), f32, np.zeros(4, np.float32), 0.25)
    with pytest.raises(ShapeError, match="flat"):
        cuda.adam_step(f32, f32, f32, f32, 1, 1e-3, **ADAM)
    with pytest.raises(ShapeError, match="m has shape"):
        p = np.zeros(5)
        cuda.adam_step(p, p, np.zeros(4), p, 1, 1e-3, **ADAM)
    with pytest.raises(ConfigError, match="CuPy arrays"):  # host arrays never reach a kernel
        cuda.relu_backward(f32, f32, f32)
    with pytest.raises(ConfigError, match="CuPy arrays"):
        cuda.bias_add(f64, np.zeros(3))


def test_adam_rejects_a_step_count_below_one(kernel_device):
    xp = kernel_device.xp
    p = xp.zeros(4, xp.float32)
    with pytest.raises(ConfigError, match="t >= 1"):
        cuda.adam_step(p, p, p.copy(), p.copy(), 0, 1e-3, **ADAM)


# ---- GPU only: CUDA-graph capture -----------------------------------------------------


@gpu
def test_adam_in_a_cuda_graph(rng):
    # One capture serves every step because t (advanced inside the graph) and the lr table are read on the device.
    cp = pytest.importorskip("cupy")
    n = 4096
    p0 = rng.standard_normal(n).astype(np.float32)
    ours = [cp.asarray(p0), cp.zeros(n, np.float32), cp.zeros(n, np.float32)]
    ref = [p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)]
    g_dev = cp.asarray((rng.standard_normal(n) * 0.1).astype(np.float32))
    t, lrs = cp.zeros(1, cp.int32), cp.asarray(np.array([1e-3, 2e-3, 5e-4]))
    cuda.load_all()
    cp.cuda.Device().synchronize()  # the uploads above ran on the null stream; the replay's stream does not wait for it
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        t += 1
        cuda.adam_step(ours[0], g_dev, ours[1], ours[2], t, lrs, **ADAM)
        graph = stream.end_capture()
        for _ in range(3):
            graph.launch(stream)
        stream.synchronize()
    g = g_dev.get()
    for step, lr in zip((1, 2, 3), (1e-3, 2e-3, 5e-4)):
        reference.adam_step(ref[0], g, ref[1], ref[2], step, lr, **ADAM)
    assert int(t.get()[0]) == 3
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a.get(), b, rtol=1e-6, atol=1e-7)
