"""CUDA versions of the fused ops: thin typed wrappers over ``kernels/*.cu``.

Same signatures as :mod:`xpnet.ops.reference`. Each wrapper checks dtypes, contiguity and
shapes on the host (raising :class:`ShapeError` / :class:`ConfigError`), picks the
``_f32`` / ``_f64`` kernel and launches it on CuPy's current stream; nothing syncs, so the
wrappers are safe inside a CUDA-graph capture once each kernel has been loaded eagerly.

Importing this module needs no CuPy: CuPy is imported, and a ``.cu`` file compiled with
NVRTC (``cupy.RawModule``), on the first call that needs it, then cached per file and
device (CuPy also caches the cubin on disk). The launch-configuration helpers are plain
functions so the CPU test suite can check them.
"""

from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path

import numpy as np

from ..backend import _import_cupy
from ..errors import ConfigError, ShapeError

# The kernels each file must define (tests check them against nvcc's PTX).
KERNEL_NAMES = {
    "relu.cu": (
        "bias_relu_forward_f32", "bias_relu_forward_f64",
        "relu_backward_f32", "relu_backward_f64",
        "bias_grad_f32", "bias_grad_f64",
    ),
    "softmax_xent.cu": (
        "softmax_xent_f32_i32", "softmax_xent_f32_i64",
        "softmax_xent_f64_i32", "softmax_xent_f64_i64",
    ),
    "adam.cu": ("adam_step_f32", "adam_step_f64", "increment_step"),
    # The CUDA-graph training step (xpnet/train_graph.py).
    "graph_step.cu": (
        "gather_batch_f32", "gather_batch_f64",
        "bias_add_f32", "bias_add_f64",
        "step_metrics_f32", "step_metrics_f64",
        "l2_grad_f32", "l2_grad_f64",
        "advance_offset",
    ),
}
NVRTC_OPTIONS = ("--std=c++17",)

BLOCK = 256  # element-wise kernels: 8 warps, enough to hide latency at any occupancy
MAX_BLOCKS = 4096  # grid-stride loops cover the rest; ~4 waves on a 132-SM H100
SOFTMAX_BLOCK = 256  # one warp per row, so 8 rows per block
BIAS_ROWS = 8  # must match BIAS_ROWS in relu.cu: block (32, BIAS_ROWS)
METRICS_BLOCK = 256  # must match METRICS_BLOCK in graph_step.cu: one block, power of two
L2_BLOCK = 256  # must match L2_BLOCK in graph_step.cu

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_LABEL_SUFFIX = {np.dtype(np.int32): "i32", np.dtype(np.int64): "i64"}


# ---- launch configuration (pure, CPU-testable) ---------------------------------------


def _grid_1d(n: int, block: int = BLOCK, max_blocks: int = MAX_BLOCKS) -> tuple[int]:
    """Blocks for a grid-stride loop over ``n`` elements: enough to cover, capped, at least 1."""
    if n < 0 or block <= 0:
        raise ValueError(f"bad launch size n={n}, block={block}")
    return (max(1, min(max_blocks, -(-n // block))),)


def _rows_per_block(block: int = SOFTMAX_BLOCK) -> int:
    """Rows one block handles in the one-warp-per-row softmax kernel."""
    if block <= 0 or block % 32:
        raise ValueError(f"block must be a positive multiple of 32, got {block}")
    return block // 32


def _grid_rows(m: int, block: int = SOFTMAX_BLOCK) -> tuple[int]:
    """Blocks for ``m`` rows, one warp each."""
    return (max(1, -(-m // _rows_per_block(block))),)


def _bias_grad_launch(n: int) -> tuple[tuple[int], tuple[int, int]]:
    """(grid, block) for the column sum: 32 columns per block, BIAS_ROWS row groups."""
    return (max(1, -(-n // 32)),), (32, BIAS_ROWS)


# ---- validation ----------------------------------------------------------------------


def _float_suffix(*arrays) -> str:
    """``f32``/``f64`` when every array has that one dtype and is C-contiguous."""
    dt = arrays[0].dtype
    if dt not in _SUFFIX:
        raise ConfigError(f"CUDA ops support float32 and float64, got {dt}")
    for a in arrays:
        if a.dtype != dt:
            raise ConfigError(f"CUDA ops need one dtype for all arrays, got {dt} and {a.dtype}")
        if not a.flags.c_contiguous:
            raise ShapeError(f"CUDA ops need C-contiguous arrays (shape {tuple(a.shape)} is a strided view)")
    return _SUFFIX[dt]


def _is_device_array(a) -> bool:
    """True for a CuPy array (the one place that decides; the CPU kernel emulator in the tests swaps it)."""
    return type(a).__module__.startswith("cupy")


def _on_device(*arrays) -> None:
    """CuPy arrays only: a NumPy array here would hand the kernel a host pointer."""
    for a in arrays:
        if not _is_device_array(a):
            raise ConfigError(f"CUDA ops need CuPy arrays, got {type(a).__module__}.{type(a).__name__}")


def _expect(name: str, a, shape) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ShapeError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)}")


def _check_2d(name: str, a) -> tuple[int, int]:
    if a.ndim != 2:
        raise ShapeError(f"{name} must be 2-D (rows are samples), got shape {tuple(a.shape)}")
    return a.shape


# ---- loading -------------------------------------------------------------------------


def kernel_source(filename: str) -> str:
    """The CUDA C text of ``filename``: from the installed package, else the source checkout."""
    try:
        res = importlib.resources.files("xpnet._cuda_src") / filename
        if res.is_file():
            return res.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    path = Path(__file__).resolve().parents[2] / "kernels" / filename
    if not path.is_file():
        raise FileNotFoundError(f"CUDA source {filename} not found in xpnet._cuda_src nor {path.parent}")
    return path.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _module(filename: str, device_id: int):
    cupy = _import_cupy()
    return cupy.RawModule(code=kernel_source(filename), options=NVRTC_OPTIONS)


@functools.lru_cache(maxsize=None)
def _kernel_on(filename: str, name: str, device_id: int):
    if name not in KERNEL_NAMES[filename]:
        raise KeyError(f"{name} is not a kernel of {filename}")
    return _module(filename, device_id).get_function(name)


def _kernel(filename: str, name: str):
    """The compiled kernel for the current device (compiled on first use, then cached)."""
    cupy = _import_cupy()
    return _kernel_on(filename, name, cupy.cuda.runtime.getDevice())


def load_all() -> None:
    """Compile and load every kernel on the current device now (call before a graph capture)."""
    for filename, names in KERNEL_NAMES.items():
        for name in names:
            _kernel(filename, name)


# ---- ops -----------------------------------------------------------------------------


def bias_relu_forward(Z, b, A):
    """``Z += b`` in place, then ``A = max(Z, 0)``. Z, A: (m, n); b: (n,)."""
    sfx = _float_suffix(Z, b, A)
    m, n = _check_2d("Z", Z)
    _expect("b", b, (n,))
    _expect("A", A, (m, n))
    _on_device(Z, b, A)
    if Z.size:
        _kernel("relu.cu", f"bias_relu_forward_{sfx}")(_grid_1d(Z.size), (BLOCK,), (Z, b, A, np.int64(m), np.int64(n)))
    return A


def relu_backward(dA, Z, dZ):
    """``dZ = dA * (Z > 0)``; ``dZ`` may be ``dA``."""
    sfx = _float_suffix(dA, Z, dZ)
    _expect("dA", dA, Z.shape)
    _expect("dZ", dZ, Z.shape)
    _on_device(dA, Z, dZ)
    if Z.size:
        _kernel("relu.cu", f"relu_backward_{sfx}")(_grid_1d(Z.size), (BLOCK,), (dA, Z, dZ, np.int64(Z.size)))
    return dZ


def bias_grad(dZ, db):
    """``db = dZ.sum(axis=0)`` (accumulated in float64 on the device, deterministic)."""
    sfx = _float_suffix(dZ, db)
    m, n = _check_2d("dZ", dZ)
    _expect("db", db, (n,))
    _on_device(dZ, db)
    if n:
        grid, block = _bias_grad_launch(n)
        _kernel("relu.cu", f"bias_grad_{sfx}")(grid, block, (dZ, db, np.int64(m), np.int64(n)))
    return db


@functools.lru_cache(maxsize=None)
def _label_buffer(device_id: int, m: int):
    return _import_cupy().empty((m,), dtype=np.int32)


def softmax_xent(Z, labels, dZ, loss_rows, scale):
    """Softmax + cross-entropy, one warp per row; ``dZ`` may be ``Z``. Returns ``loss_rows``.

    Labels may be int32 or int64 (each has its own kernel, no conversion); other integer
    types are copied into a cached int32 buffer first (one extra tiny kernel per call). A
    label outside ``[0, k)`` gives a NaN loss for that row instead of an out-of-bounds read.
    """
    sfx = _float_suffix(Z, dZ, loss_rows)
    m, k = _check_2d("Z", Z)
    _expect("dZ", dZ, (m, k))
    _expect("loss_rows", loss_rows, (m,))
    _expect("labels", labels, (m,))
    if k == 0:
        raise ShapeError("softmax_xent needs at least one class (Z has 0 columns)")
    if labels.dtype.kind not in "iu":
        raise ConfigError(f"labels must be integer class indices, got {labels.dtype}")
    _on_device(Z, labels, dZ, loss_rows)
    if labels.dtype not in _LABEL_SUFFIX or not labels.flags.c_contiguous:
        cupy = _import_cupy()
        buf = _label_buffer(cupy.cuda.runtime.getDevice(), m)
        buf[...] = labels
        labels = buf
    if m:
        name = f"softmax_xent_{sfx}_{_LABEL_SUFFIX[labels.dtype]}"
        _kernel("softmax_xent.cu", name)(
            _grid_rows(m), (SOFTMAX_BLOCK,), (Z, labels, dZ, loss_rows, np.int64(m), np.int64(k), Z.dtype.type(scale))
        )
    return loss_rows


@functools.lru_cache(maxsize=None)
def _step_buffer(device_id: int):
    return _import_cupy().zeros((1,), dtype=np.int32)


def _device_step(t):
    """``t`` as a device int32[1]: passed through if it already is, else written into a cached one."""
    if hasattr(t, "shape") and _is_device_array(t):
        if t.dtype != np.int32 or t.size != 1:
            raise ConfigError(f"adam_step needs t as a device int32 array of shape (1,), got {t.dtype} {tuple(t.shape)}")
        return t
    step = int(t.reshape(-1)[0]) if hasattr(t, "shape") else int(t)
    if step < 1:
        raise ConfigError(f"adam_step needs t >= 1 (the step count after this step), got {step}")
    cupy = _import_cupy()
    buf = _step_buffer(cupy.cuda.runtime.getDevice())
    buf.fill(step)  # a tiny async kernel: no host sync
    return buf


def adam_step(p, g, m, v, t, lr, beta1, beta2, eps):
    """One fused Adam step over flat buffers, in place; ``t`` is an int or a device int32[1].

    With a device ``t`` the kernel reads the step count on the GPU, so one captured graph
    (``adam_step`` then :func:`increment_step`) is valid for every step.
    """
    sfx = _float_suffix(p, g, m, v)
    if p.ndim != 1:
        raise ShapeError(f"adam_step works on flat buffers, got p of shape {tuple(p.shape)}")
    for name, a in (("g", g), ("m", m), ("v", v)):
        _expect(name, a, p.shape)
    _on_device(p, g, m, v)
    t_dev = _device_step(t)
    if p.size:
        args = (p, g, m, v, t_dev, np.int64(p.size), np.float64(lr), np.float64(beta1), np.float64(beta2), np.float64(eps))
        _kernel("adam.cu", f"adam_step_{sfx}")(_grid_1d(p.size), (BLOCK,), args)
    return p


def increment_step(t):
    """``t[0] += 1`` on the device (the last node of a captured training step)."""
    if not (_is_device_array(t) and t.dtype == np.int32 and t.size == 1):
        raise ConfigError("increment_step needs a device int32 array of shape (1,)")
    _kernel("adam.cu", "increment_step")((1,), (1,), (t,))
    return t


# ---- CUDA-graph training step (kernels/graph_step.cu) ---------------------------------
# Every index / counter these read is a device array, so one captured graph serves all steps.


def _device_scalar(name: str, a, dtype) -> None:
    if not (_is_device_array(a) and a.dtype == np.dtype(dtype) and a.size == 1):
        raise ConfigError(f"{name} must be a device {np.dtype(dtype).name} array of shape (1,)")


def gather_batch(X, y, perm, offset, Xb, yb):
    """``Xb[r] = X[perm[offset + r]]``, ``yb[r] = y[perm[offset + r]]`` for ``r < len(Xb)``.

    X: (n, nf) float; y: (n,) int32; perm: (n,) int64; offset: device int32[1] (read on the
    device, never on the host: the caller keeps ``offset + len(Xb) <= n``); Xb: (bs, nf);
    yb: (bs,) int32.
    """
    sfx = _float_suffix(X, Xb)
    n, nf = _check_2d("X", X)
    bs, _ = _check_2d("Xb", Xb)
    _expect("Xb", Xb, (bs, nf))
    _expect("y", y, (n,))
    _expect("perm", perm, (n,))
    _expect("yb", yb, (bs,))
    if y.dtype != np.int32 or yb.dtype != np.int32:
        raise ConfigError(f"gather_batch needs int32 labels, got {y.dtype} and {yb.dtype}")
    if perm.dtype != np.int64:
        raise ConfigError(f"gather_batch needs an int64 permutation, got {perm.dtype}")
    for name, a in (("y", y), ("perm", perm), ("yb", yb)):
        if not a.flags.c_contiguous:
            raise ShapeError(f"{name} must be C-contiguous")
    _on_device(X, y, perm, Xb, yb)
    _device_scalar("offset", offset, np.int32)
    if Xb.size:
        _kernel("graph_step.cu", f"gather_batch_{sfx}")(
            _grid_1d(Xb.size), (BLOCK,), (X, y, perm, offset, Xb, yb, np.int64(bs), np.int64(nf))
        )
    return Xb


def bias_add(Z, b):
    """``Z += b`` row-wise, in place (bit-identical to CuPy's broadcast add)."""
    sfx = _float_suffix(Z, b)
    m, n = _check_2d("Z", Z)
    _expect("b", b, (n,))
    _on_device(Z, b)
    if Z.size:
        _kernel("graph_step.cu", f"bias_add_{sfx}")(_grid_1d(Z.size), (BLOCK,), (Z, b, np.int64(m), np.int64(n)))
    return Z


def step_metrics(Z, labels, loss_rows, loss_acc, correct_acc):
    """``loss_acc += loss_rows.sum()`` (float64) and ``correct_acc += (Z.argmax(1) == labels).sum()``.

    Z must hold the logits (not yet overwritten by the loss gradient); labels: (m,) int32;
    loss_acc: device float64[1]; correct_acc: device int64[1]. One block, deterministic.
    """
    sfx = _float_suffix(Z, loss_rows)
    m, k = _check_2d("Z", Z)
    _expect("labels", labels, (m,))
    _expect("loss_rows", loss_rows, (m,))
    if labels.dtype != np.int32 or not labels.flags.c_contiguous:
        raise ConfigError(f"step_metrics needs C-contiguous int32 labels, got {labels.dtype}")
    if k == 0:
        raise ShapeError("step_metrics needs at least one class (Z has 0 columns)")
    _on_device(Z, labels, loss_rows)
    _device_scalar("loss_acc", loss_acc, np.float64)
    _device_scalar("correct_acc", correct_acc, np.int64)
    if m:
        _kernel("graph_step.cu", f"step_metrics_{sfx}")(
            (1,), (METRICS_BLOCK,), (Z, labels, loss_rows, np.int64(m), np.int64(k), loss_acc, correct_acc)
        )
    return loss_acc


def l2_grad(dW, W, coef, loss_acc, loss_coef):
    """``dW += T(coef) * W`` in place and ``loss_acc += loss_coef * sum(W**2)`` (float64, atomic).

    For L2 weight decay with the batch size m: ``coef = l2 / m`` and ``loss_coef = l2 / 2``.
    """
    sfx = _float_suffix(dW, W)
    _expect("dW", dW, W.shape)
    _on_device(dW, W)
    _device_scalar("loss_acc", loss_acc, np.float64)
    if W.size:
        _kernel("graph_step.cu", f"l2_grad_{sfx}")(
            _grid_1d(W.size, L2_BLOCK), (L2_BLOCK,),
            (dW, W, np.int64(W.size), np.float64(coef), loss_acc, np.float64(loss_coef)),
        )
    return dW


def advance_offset(offset, step):
    """``offset[0] += step`` on the device (with ``increment_step``, the end of a captured step)."""
    _device_scalar("offset", offset, np.int32)
    _kernel("graph_step.cu", "advance_offset")((1,), (1,), (offset, np.int64(step)))
    return offset
