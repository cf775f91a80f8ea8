"""The CPU emulator that lets CI run kernels/*.cu (tools/cuda_emulator/) catches what it claims to.

Each deliberately broken kernel below must be refused: an out-of-bounds write, a race that
only shows when threads run in another order (also between the lanes of a warp, which
__syncwarp orders), a __syncthreads not every thread reaches, a shuffle naming a lane that
exited, a __trap, and arguments of the wrong type. Correct kernels must
give the known answers (a warp butterfly sum, a block tree reduction, 2-D thread indices).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from tools.cuda_emulator import Emulator, EmulatorError, parse_kernels

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")

SOURCE = r"""
typedef long long i64;

extern "C" {

// correct: every lane ends with the sum of the warp's 32 values
__global__ void warp_sum(const float* x, float* out) {
    float s = x[blockIdx.x * 32 + threadIdx.x];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    out[blockIdx.x * 32 + threadIdx.x] = s;
}

// correct: a shared-memory tree reduction with barriers, one result per block
__global__ void block_sum(const double* x, double* out, i64 n) {
    __shared__ double part[128];
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    part[threadIdx.x] = i < n ? x[i] : 0.0;
    __syncthreads();
    for (int s = 64; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}

// correct: 2-D blocks, linear index = x + y * blockDim.x
__global__ void thread_ids(int* out) {
    const int lin = threadIdx.x + threadIdx.y * blockDim.x;
    out[blockIdx.x * blockDim.x * blockDim.y + lin] = (int)(threadIdx.y * 100 + threadIdx.x);
}

// broken: i <= n writes one element past the end
__global__ void off_by_one(float* x, i64 n) {
    for (i64 i = threadIdx.x; i <= n; i += blockDim.x) x[i] = 1.0f;
}

// broken: thread 31 publishes, the others read without a __syncthreads in between
__global__ void missing_sync(int* out) {
    __shared__ int flag;
    if (threadIdx.x == 31) flag = 1;
    out[threadIdx.x] = flag;
    __syncthreads();
    if (threadIdx.x == 0) flag = 0;
}

// broken: only half the block reaches the barrier
__global__ void divergent_sync(int* out) {
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = 1;
}

// broken: lanes >= 16 return, then the full-mask shuffle waits for them
__global__ void shuffle_after_exit(float* out) {
    if (threadIdx.x >= 16) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

// each lane reads what the mirrored lane wrote: ordered by __syncwarp when sync != 0
__global__ void warp_publish(int* buf, int* out, int sync) {
    buf[threadIdx.x] = (int)threadIdx.x + 1;
    if (sync) __syncwarp();
    out[threadIdx.x] = buf[31 - threadIdx.x];
}

__global__ void trap_if(int* out, int bad) {
    if (bad && threadIdx.x == 3) __trap();
    out[threadIdx.x] = 1;
}

__global__ void scale(float* x, float a, i64 n) {
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) x[i] *= a;
}

}
"""


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emu-src")
    (folder / "probe.cu").write_text(SOURCE, encoding="utf-8")
    em = Emulator(folder, tmp_path_factory.mktemp("emu-build"))
    em.build_all()
    return em


def test_parse_kernels_reads_types_and_constness():
    params = parse_kernels(SOURCE)["block_sum"]
    assert [(p.name, p.base, p.pointer, p.const) for p in params] == [
        ("x", "double", True, True), ("out", "double", True, False), ("n", "i64", False, False),
    ]


def test_warp_shuffle_butterfly_sum(emulator):
    x = np.arange(64, dtype=np.float32)
    out = np.zeros(64, np.float32)
    emulator.kernel("probe.cu", "warp_sum")((2,), (32,), (x, out))
    np.testing.assert_array_equal(out, np.repeat([x[:32].sum(), x[32:].sum()], 32))


@pytest.mark.parametrize("reverse", [False, True])
def test_block_tree_reduction(emulator, reverse):
    emulator.reverse = reverse
    x = np.random.default_rng(0).standard_normal(300)
    out = np.zeros(3)
    emulator.kernel("probe.cu", "block_sum")((3,), (128,), (x, out, np.int64(300)))
    np.testing.assert_allclose(out, [x[:128].sum(), x[128:256].sum(), x[256:].sum()], rtol=1e-13)


def test_two_dimensional_thread_index(emulator):
    out = np.full(2 * 8 * 4, -1, np.int32)
    emulator.kernel("probe.cu", "thread_ids")((2,), (8, 4), (out,))
    one_block = [y * 100 + x for y in range(4) for x in range(8)]
    assert out.tolist() == one_block * 2


def test_out_of_bounds_write_is_caught(emulator):
    x = np.zeros(10, np.float32)
    with pytest.raises(EmulatorError, match=r"off_by_one\(x\): out-of-bounds write .* 4 bytes after"):
        emulator.kernel("probe.cu", "off_by_one")((1,), (32,), (x, np.int64(10)))


def test_race_shows_as_an_order_dependent_result(emulator):
    results = []
    for reverse in (False, True):
        emulator.reverse = reverse
        out = np.zeros(32, np.int32)
        emulator.kernel("probe.cu", "missing_sync")((1,), (32,), (out,))
        results.append(out.copy())
    emulator.reverse = False
    assert not np.array_equal(results[0], results[1])


def test_divergent_syncthreads_is_an_error(emulator):
    with pytest.raises(EmulatorError, match="never reaches"):
        emulator.kernel("probe.cu", "divergent_sync")((1,), (32,), (np.zeros(32, np.int32),))


def test_shuffle_with_an_exited_lane_is_an_error(emulator):
    with pytest.raises(EmulatorError, match="exited"):
        emulator.kernel("probe.cu", "shuffle_after_exit")((1,), (32,), (np.zeros(32, np.float32),))


def test_shuffle_in_a_partial_warp_is_an_error(emulator):
    with pytest.raises(EmulatorError, match="does not exist"):
        emulator.kernel("probe.cu", "warp_sum")((1,), (16,), (np.zeros(32, np.float32), np.zeros(32, np.float32)))


def test_argument_types_must_match_the_kernel(emulator):
    kernel = emulator.kernel("probe.cu", "scale")
    x = np.ones(5, np.float32)
    kernel((1,), (32,), (x, np.float32(3), np.int64(5)))
    np.testing.assert_array_equal(x, 3)
    with pytest.raises(EmulatorError, match="float64 passed for a float"):
        kernel((1,), (32,), (x, np.float64(3), np.int64(5)))
    with pytest.raises(EmulatorError, match="int passed for a i64"):
        kernel((1,), (32,), (x, np.float32(3), 5))
    with pytest.raises(EmulatorError, match="array of float64 passed for float"):
        kernel((1,), (32,), (np.ones(5), np.float32(3), np.int64(5)))
    with pytest.raises(EmulatorError, match="strided"):
        kernel((1,), (32,), (np.ones(10, np.float32)[::2], np.float32(3), np.int64(5)))
    with pytest.raises(EmulatorError, match="takes 3 arguments"):
        kernel((1,), (32,), (x, np.float32(3)))
    with pytest.raises(EmulatorError, match="1..1024"):
        kernel((1,), (2048,), (x, np.float32(3), np.int64(5)))


def test_syncwarp_orders_the_lanes_of_a_warp(emulator):
    results = {}
    for sync in (0, 1):
        for reverse in (False, True):
            emulator.reverse = reverse
            buf, out = np.zeros(32, np.int32), np.zeros(32, np.int32)
            emulator.kernel("probe.cu", "warp_publish")((1,), (32,), (buf, out, np.int32(sync)))
            results[sync, reverse] = out.tolist()
    emulator.reverse = False
    assert results[1, False] == results[1, True] == list(range(32, 0, -1))
    assert results[0, False] != results[0, True]  # without it, the lane order shows


def test_trap_fails_the_launch(emulator):
    out = np.zeros(32, np.int32)
    emulator.kernel("probe.cu", "trap_if")((1,), (32,), (out, np.int32(0)))
    assert (out == 1).all()
    with pytest.raises(EmulatorError, match=r"__trap\(\) at block \(0,0,0\) thread 3"):
        emulator.kernel("probe.cu", "trap_if")((1,), (32,), (out, np.int32(1)))
