"""CUDA versions of the fused ops: thin typed wrappers over ``kernels/*.cu``.

Same names and signatures as :mod:`xpnet.ops.reference`, the contract. Each wrapper checks
shapes on the host (:class:`ShapeError`), falls back to the reference for a dtype or layout
it has no kernel for, picks the ``_f32`` / ``_f64`` kernel and launches it on CuPy's current
stream; nothing syncs (except label validation, which the trainer turns off), so the
wrappers are safe inside a CUDA-graph capture once each kernel has been loaded eagerly.

Importing this module needs no CuPy: CuPy is imported, and a ``.cu`` file compiled with
NVRTC (``cupy.RawModule``), on the first call that needs it, then cached per file and
device (CuPy also caches the cubin on disk). The launch-configuration helpers are plain
functions so the CPU test suite can check them.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from pathlib import Path

import numpy as np

from xpnet.backend import _import_cupy
from xpnet.errors import ConfigError, ShapeError
from xpnet.ops import reference

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
    "adam.cu": ("adam_step_f32", "adam_step_f64"),
    "dropout.cu": ("dropout_f32", "dropout_f64", "dropout_backward_f32", "dropout_backward_f64"),
    "step.cu": (
        "gather_batch_f32", "gather_batch_f64",
        "bias_add_f32", "bias_add_f64",
        "step_metrics_f32", "step_metrics_f64",
        "l2_grad_f32", "l2_grad_f64",
    ),
}
BLOCK = 256  # element-wise kernels: 8 warps, enough to hide latency at any occupancy
MAX_BLOCKS = 4096  # grid-stride loops cover the rest; ~4 waves on a 132-SM H100
SOFTMAX_BLOCK = 256  # one warp per row, so 8 rows per block
BIAS_ROWS = 8  # bias_grad's block is (32, BIAS_ROWS)
METRICS_BLOCK = 256  # step_metrics: one block, a power of two (its tree reduction)
L2_BLOCK = 256  # l2_grad's block, a power of two
# The constants the kernels are compiled with: their one source. They reach the .cu files as
# -D options (NVRTC here, g++ in tools/cuda_emulator), which define them nowhere else.
KERNEL_DEFINES = {"BIAS_ROWS": BIAS_ROWS, "METRICS_BLOCK": METRICS_BLOCK, "L2_BLOCK": L2_BLOCK}
# Set to 1 to compile kernels that __trap() on a refused input (a bad t/t0) instead of writing
# NaN: for compute-sanitizer and debugging runs.
DEVICE_CHECKS_ENV = "XPNET_CUDA_DEVICE_CHECKS"


def compile_defines(device_checks: bool = False) -> tuple[str, ...]:
    """``-D`` options of every kernel compile (NVRTC and the emulator's g++ alike)."""
    return (*(f"-D{k}={v}" for k, v in KERNEL_DEFINES.items()), *(("-DXPNET_DEVICE_CHECKS",) if device_checks else ()))


# --fmad=false: NVRTC contracts a*b + c into one FMA by default (one rounding instead of two), so
# a kernel would round differently from NumPy and from the emulator (g++ -ffp-contract=off). The
# kernels are memory-bound: exact parity costs nothing measurable. (CuPy adds -ftz=true itself.)
NVRTC_OPTIONS = ("--std=c++17", "--fmad=false", *compile_defines())


def nvrtc_options() -> tuple[str, ...]:
    """:data:`NVRTC_OPTIONS`, plus ``-DXPNET_DEVICE_CHECKS`` when :data:`DEVICE_CHECKS_ENV` is set."""
    if os.environ.get(DEVICE_CHECKS_ENV, "").strip() not in ("", "0"):
        return (*NVRTC_OPTIONS, "-DXPNET_DEVICE_CHECKS")
    return NVRTC_OPTIONS

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


def _float_suffix(*arrays) -> str | None:
    """``f32``/``f64`` when every array has that one dtype and is C-contiguous, else None
    (the caller then falls back to the reference: the contract's policy)."""
    dt = arrays[0].dtype
    if dt not in _SUFFIX or any(a.dtype != dt or not a.flags.c_contiguous for a in arrays):
        return None
    return _SUFFIX[dt]


def _counter(name: str, a, dtype=np.int32) -> bool:
    """True for a C-contiguous device array of ``dtype`` and shape (1,): what the kernels read."""
    if not _is_device_array(a):
        raise ConfigError(f"{name} must be a device array of shape (1,), got {type(a).__name__}")
    return a.dtype == np.dtype(dtype) and a.shape == (1,)


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
    """The CUDA C text of ``filename``: from the source checkout this module lies in, else the
    installed package (an editable install's ``xpnet._cuda_src`` may map to another checkout)."""
    checkout = Path(__file__).resolve().parents[2]
    path = checkout / "kernels" / filename
    if (checkout / "pyproject.toml").is_file() and path.is_file():
        return path.read_text(encoding="utf-8")
    try:
        res = importlib.resources.files("xpnet._cuda_src") / filename
        if res.is_file():
            return res.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    raise FileNotFoundError(f"CUDA source {filename} not found in xpnet._cuda_src nor {path.parent}")


@functools.lru_cache(maxsize=None)
def _module(filename: str, device_id: int, options: tuple[str, ...]):
    cupy = _import_cupy()
    return cupy.RawModule(code=kernel_source(filename), options=options)


@functools.lru_cache(maxsize=None)
def _kernel_on(filename: str, name: str, device_id: int, options: tuple[str, ...]):
    if name not in KERNEL_NAMES[filename]:
        raise KeyError(f"{name} is not a kernel of {filename}")
    return _module(filename, device_id, options).get_function(name)


def _kernel(filename: str, name: str):
    """The compiled kernel for the current device (compiled on first use, then cached)."""
    cupy = _import_cupy()
    return _kernel_on(filename, name, cupy.cuda.runtime.getDevice(), nvrtc_options())


def load_all() -> None:
    """Compile and load every kernel on the current device now (call before a graph capture)."""
    for filename, names in KERNEL_NAMES.items():
        for name in names:
            _kernel(filename, name)


# ---- ops -----------------------------------------------------------------------------

matmul = reference.matmul  # cupy.matmul (cuBLAS); inside a capture the trainer passes ops.cublas's
# the GPU keeps the op-by-op step
dense_step, dense_step_fits, dense_step_transposed = (reference.dense_step, reference.dense_step_fits,
                                                      reference.dense_step_transposed)


def gather_batch(X, y, perm, t, t0, batch_size, Xb, yb):
    """``Xb[r] = X[perm[o + r]]``, ``yb[r] = y[perm[o + r]]``, ``o = (t - t0) * batch_size`` read on the device.

    What the reference refuses with an error (rows outside ``perm`` or ``X``), the kernel, which
    cannot raise, refuses by writing NaN rows with label -1 (a NaN loss, so DivergedError at the
    epoch's end); with :data:`DEVICE_CHECKS_ENV` set it traps."""
    n, nf = _check_2d("X", X)
    bs, _ = _check_2d("Xb", Xb)
    _expect("Xb", Xb, (bs, nf))
    _expect("perm", perm, (n,))
    _on_device(X, y, perm, Xb, yb)
    sfx = _float_suffix(X, Xb)
    kernel_ok = (
        sfx and y.shape == (n,) and yb.shape == (bs,) and y.dtype == yb.dtype == np.int32 and perm.dtype == np.int64
        and y.flags.c_contiguous and yb.flags.c_contiguous and perm.flags.c_contiguous
        and _counter("t", t) and _counter("t0", t0)
    )
    if not kernel_ok:
        return reference.gather_batch(X, y, perm, t, t0, batch_size, Xb, yb)
    if Xb.size:
        _kernel("step.cu", f"gather_batch_{sfx}")(
            _grid_1d(Xb.size), (BLOCK,),
            (X, y, perm, np.int64(n), t, t0, np.int64(batch_size), Xb, yb, np.int64(bs), np.int64(nf)),
        )
    return Xb


def bias_add(Z, b):
    """``Z += b`` row-wise, in place (bit-identical to CuPy's broadcast add)."""
    m, n = _check_2d("Z", Z)
    _expect("b", b, (n,))
    _on_device(Z, b)
    sfx = _float_suffix(Z, b)
    if sfx is None:
        return reference.bias_add(Z, b)
    if Z.size:
        _kernel("step.cu", f"bias_add_{sfx}")(_grid_1d(Z.size), (BLOCK,), (Z, b, np.int64(m), np.int64(n)))
    return Z


def bias_relu_forward(Z, b, A):
    """``Z += b`` in place, then ``A = max(Z, 0)``. Z, A: (m, n); b: (n,)."""
    m, n = _check_2d("Z", Z)
    _expect("b", b, (n,))
    _expect("A", A, (m, n))
    _on_device(Z, b, A)
    sfx = _float_suffix(Z, b, A)
    if sfx is None:
        return reference.bias_relu_forward(Z, b, A)
    if Z.size:
        _kernel("relu.cu", f"bias_relu_forward_{sfx}")(_grid_1d(Z.size), (BLOCK,), (Z, b, A, np.int64(m), np.int64(n)))
    return A


def relu_backward(dA, Z, dZ):
    """``dZ = dA * (Z > 0)``; ``dZ`` may be ``dA``."""
    _expect("dA", dA, Z.shape)
    _expect("dZ", dZ, Z.shape)
    _on_device(dA, Z, dZ)
    sfx = _float_suffix(dA, Z, dZ)
    if sfx is None:
        return reference.relu_backward(dA, Z, dZ)
    if Z.size:
        _kernel("relu.cu", f"relu_backward_{sfx}")(_grid_1d(Z.size), (BLOCK,), (dA, Z, dZ, np.int64(Z.size)))
    return dZ


def bias_grad(dZ, db):
    """``db = dZ.sum(axis=0)`` (accumulated in float64 on the device, deterministic)."""
    m, n = _check_2d("dZ", dZ)
    _expect("db", db, (n,))
    _on_device(dZ, db)
    sfx = _float_suffix(dZ, db)
    if sfx is None:
        return reference.bias_grad(dZ, db)
    if n:
        grid, block = _bias_grad_launch(n)
        _kernel("relu.cu", f"bias_grad_{sfx}")(grid, block, (dZ, db, np.int64(m), np.int64(n)))
    return db


def softmax_xent(Z, labels, dZ, loss_rows, scale, smoothing=0.0, validate=True):
    """Softmax + cross-entropy with label smoothing, one warp per row; ``dZ`` may be ``Z``.

    int32 and int64 labels each have a kernel. ``validate`` costs a host sync (a device
    min/max); unchecked, a label outside ``[0, k)`` gives that row a NaN loss, never an
    out-of-bounds read.
    """
    m, k = _check_2d("Z", Z)
    _expect("dZ", dZ, (m, k))
    _expect("loss_rows", loss_rows, (m,))
    _expect("labels", labels, (m,))
    if k == 0:
        raise ShapeError("softmax_xent needs at least one class (Z has 0 columns)")
    if labels.dtype.kind not in "iu":
        raise ConfigError(f"labels must be integer class indices, got {labels.dtype}")
    _on_device(Z, labels, dZ, loss_rows)
    if validate:
        reference.check_labels(labels, k)
    sfx = _float_suffix(Z, dZ, loss_rows)
    if sfx is None or labels.dtype not in _LABEL_SUFFIX or not labels.flags.c_contiguous:
        return reference.softmax_xent(Z, labels, dZ, loss_rows, scale, smoothing, validate=False)
    if m:
        name = f"softmax_xent_{sfx}_{_LABEL_SUFFIX[labels.dtype]}"
        args = (Z, labels, dZ, loss_rows, np.int64(m), np.int64(k), Z.dtype.type(scale), Z.dtype.type(smoothing))
        _kernel("softmax_xent.cu", name)(_grid_rows(m), (SOFTMAX_BLOCK,), args)
    return loss_rows


def step_metrics(Z, labels, loss_rows, loss_acc, correct_acc, t):
    """``loss_acc += Σ loss_rows``, ``correct_acc += #(argmax Z == labels)``, ``t += 1``: one block, deterministic."""
    m, k = _check_2d("Z", Z)
    _expect("labels", labels, (m,))
    _expect("loss_rows", loss_rows, (m,))
    if k == 0:
        raise ShapeError("step_metrics needs at least one class (Z has 0 columns)")
    _on_device(Z, labels, loss_rows)
    sfx = _float_suffix(Z, loss_rows)
    kernel_ok = (
        sfx and labels.dtype == np.int32 and labels.flags.c_contiguous
        and _counter("loss_acc", loss_acc, np.float64) and _counter("correct_acc", correct_acc, np.int64) and _counter("t", t)
    )
    if not kernel_ok:
        return reference.step_metrics(Z, labels, loss_rows, loss_acc, correct_acc, t)
    _kernel("step.cu", f"step_metrics_{sfx}")(
        (1,), (METRICS_BLOCK,), (Z, labels, loss_rows, np.int64(m), np.int64(k), loss_acc, correct_acc, t)
    )
    return loss_acc


def l2_grad(dW, W, coef, loss_acc, loss_coef):
    """``dW += T(coef)·W`` in place and ``loss_acc += loss_coef·ΣW²`` (float64 atomics: the
    loss may differ in the last bits between runs, the weights never do)."""
    _expect("dW", dW, W.shape)
    _on_device(dW, W)
    sfx = _float_suffix(dW, W)
    if sfx is None or not _counter("loss_acc", loss_acc, np.float64):
        return reference.l2_grad(dW, W, coef, loss_acc, loss_coef)
    if W.size:
        _kernel("step.cu", f"l2_grad_{sfx}")(
            _grid_1d(W.size, L2_BLOCK), (L2_BLOCK,),
            (dW, W, np.int64(W.size), np.float64(coef), loss_acc, np.float64(loss_coef)),
        )
    return dW


def dropout(H, D, U, rate, seed, t, layer):
    """Inverted dropout with counter-based masks (``t``: a device int32[1], read on the device)."""
    _expect("D", D, H.shape)
    _expect("U", U, H.shape)
    _on_device(H, D, U)
    sfx = _float_suffix(H, D, U)
    if sfx is None or not (hasattr(t, "shape") and _counter("t", t)):
        return reference.dropout(H, D, U, rate, seed, t, layer)
    if H.size:
        args = (H, D, U, np.int64(H.size), np.int64(int(seed) % 2**63), t, np.int64(layer),
                np.int64(reference.dropout_threshold(rate)), H.dtype.type(1.0 / (1.0 - rate)))
        _kernel("dropout.cu", f"dropout_{sfx}")(_grid_1d(H.size), (BLOCK,), args)
    return D


def dropout_backward(dD, U, dH):
    """``dH = dD * U``; ``dH`` may be ``dD``."""
    _expect("dD", dD, U.shape)
    _expect("dH", dH, U.shape)
    _on_device(dD, U, dH)
    sfx = _float_suffix(dD, U, dH)
    if sfx is None:
        return reference.dropout_backward(dD, U, dH)
    if U.size:
        _kernel("dropout.cu", f"dropout_backward_{sfx}")(_grid_1d(U.size), (BLOCK,), (dD, U, dH, np.int64(U.size)))
    return dH


@functools.lru_cache(maxsize=None)
def _scalar_buffers(device_id: int):
    """A step-count and a dummy lr-table buffer, for callers that pass plain numbers."""
    cupy = _import_cupy()
    return cupy.zeros((1,), dtype=np.int32), cupy.zeros((1,), dtype=np.float64)


def adam_step(p, g, m, v, t, lr, beta1, beta2, eps):
    """One fused Adam step over flat buffers, in place.

    ``t``: an int, or a device int32[1] the kernel reads (so one captured graph serves every
    step); ``lr``: a float, or a device float64 table read at ``lr[min(t, len) - 1]`` (a
    schedule). A host ``t < 1`` raises ConfigError like the reference; a device one makes the
    kernel skip the update and set ``p`` to NaN (or trap, with :data:`DEVICE_CHECKS_ENV`).
    """
    if p.ndim != 1:
        raise ShapeError(f"adam_step works on flat buffers, got p of shape {tuple(p.shape)}")
    for name, a in (("g", g), ("m", m), ("v", v)):
        _expect(name, a, p.shape)
    _on_device(p, g, m, v)
    sfx = _float_suffix(p, g, m, v)
    table = hasattr(lr, "shape")
    device_t = hasattr(t, "shape") and _is_device_array(t)
    if sfx is None or (device_t and not _counter("t", t)) or (table and not (lr.dtype == np.float64 and lr.ndim == 1
                                                                          and lr.flags.c_contiguous and lr.size)):
        return reference.adam_step(p, g, m, v, t, lr, beta1, beta2, eps)
    t_buf, lr_buf = _scalar_buffers(_import_cupy().cuda.runtime.getDevice())
    if not device_t:
        step = reference.check_step(t)
        t_buf.fill(step)  # a tiny async kernel: no host sync
        t = t_buf
    lrs, n_lrs, lr = (lr, lr.size, 0.0) if table else (lr_buf, 0, float(lr))
    if p.size:
        args = (p, g, m, v, t, lrs, np.int64(n_lrs), np.int64(p.size),
                np.float64(lr), np.float64(beta1), np.float64(beta2), np.float64(eps))
        _kernel("adam.cu", f"adam_step_{sfx}")(_grid_1d(p.size), (BLOCK,), args)
    return p
