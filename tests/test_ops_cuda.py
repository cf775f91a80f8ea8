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


def test_bias_grad_launch():
    assert cuda._bias_grad_launch(10) == ((1,), (32, cuda.BIAS_ROWS))
    assert cuda._bias_grad_launch(1024) == ((32,), (32, cuda.BIAS_ROWS))
    assert cuda._bias_grad_launch(1025)[0] == (33,)


def test_kernel_constants_have_one_source():
    """BIAS_ROWS, METRICS_BLOCK, L2_BLOCK live in ops/cuda.py only: NVRTC and the emulator's g++
    get them as -D options, and no .cu file defines them (a second copy could drift)."""
    sources = {name: cuda.kernel_source(name) for name in cuda.KERNEL_NAMES}
    for const, value in cuda.KERNEL_DEFINES.items():
        assert getattr(cuda, const) == value
        assert f"-D{const}={value}" in cuda.NVRTC_OPTIONS
        for name, text in sources.items():
            assert not re.search(rf"#\s*define\s+{const}\b", text), f"{name} defines {const} itself"
        assert any(re.search(rf"#\s*error\b.*\b{const}\b", text) for text in sources.values()), const
    from tools.cuda_emulator.emulator import kernel_defines

    assert set(kernel_defines()) == {o for o in cuda.NVRTC_OPTIONS if o.startswith("-D")}
    assert cuda.METRICS_BLOCK & (cuda.METRICS_BLOCK - 1) == 0 and cuda.L2_BLOCK & (cuda.L2_BLOCK - 1) == 0


def test_no_fma_contraction_anywhere():
    """One rounding rule for GPU and emulator: NVRTC with --fmad=false, g++ with
    -ffp-contract=off, so no kernel needs __fmul_rn to keep a product out of an FMA."""
    assert "--fmad=false" in cuda.NVRTC_OPTIONS
    import inspect

    from tools.cuda_emulator import emulator

    assert "-ffp-contract=off" in inspect.getsource(emulator.compile_kernels)
    for name in cuda.KERNEL_NAMES:
        assert not re.search(r"__[fd]mul_rn|mul_rn\(", cuda.kernel_source(name)), name


def test_in_place_softmax_syncs_the_warp_between_reads_and_writes():
    """dZ may be Z: a shuffle is no memory fence, so a __syncwarp must separate the last read of
    the row from the first write of dZ."""
    text = cuda.kernel_source("softmax_xent.cu")
    body = text[text.index("softmax_xent_impl"):text.index('extern "C"')]
    last_shuffle = body.rindex("__shfl_xor_sync")
    first_write = body.index("dz[j] =")
    sync = body.find("__syncwarp(", last_shuffle)
    assert last_shuffle < sync < first_write, "no __syncwarp between the row's reads and dZ's writes"


def test_device_checks_trap_instead_of_writing_nan(cuda_emulator, tmp_path, monkeypatch):
    """XPNET_CUDA_DEVICE_CHECKS=1 adds -DXPNET_DEVICE_CHECKS: a refused gather or Adam step traps
    (here on the emulator, compiled with that define)."""
    from tools.cuda_emulator import Emulator, EmulatorError, install

    monkeypatch.setenv(cuda.DEVICE_CHECKS_ENV, "1")
    assert cuda.nvrtc_options() == (*cuda.NVRTC_OPTIONS, "-DXPNET_DEVICE_CHECKS")
    monkeypatch.setenv(cuda.DEVICE_CHECKS_ENV, "0")
    assert cuda.nvrtc_options() == cuda.NVRTC_OPTIONS
    emulator = Emulator(KERNELS, tmp_path, defines=cuda.compile_defines(device_checks=True))
    install(monkeypatch, emulator)
    X, y, perm = np.zeros((4, 3)), np.zeros(4, np.int32), np.arange(4, dtype=np.int64)
    t, t0 = np.array([3], np.int32), np.array([0], np.int32)
    with pytest.raises(EmulatorError, match="__trap"):
        cuda.gather_batch(X, y, perm, t, t0, 2, np.empty((2, 3)), np.empty(2, np.int32))
    p = np.ones(4)
    with pytest.raises(EmulatorError, match="__trap"):
        cuda.adam_step(p, p.copy(), np.zeros(4), np.zeros(4), np.zeros(1, np.int32), 1e-3, **ADAM)
    cuda.gather_batch(X, y, perm, t0, t0, 2, np.empty((2, 3)), np.empty(2, np.int32))  # in range: runs


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
