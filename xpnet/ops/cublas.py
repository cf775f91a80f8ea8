"""cuBLAS GEMM through ctypes, usable inside a CUDA stream capture.

Why not ``cupy.matmul``: CuPy's cuBLAS wrappers call ``setStream`` first, and that raises
``NotImplementedError`` while the stream is capturing (cupy/cupy#6290; see
``shared/notes/gpu.md``). Calling ``libcublas`` directly avoids the guard. NVIDIA's rules for
capturing cuBLAS: bind the handle to the capture stream (``cublasSetStream``) and give it a
user workspace (``cublasSetWorkspace``) *before* capturing, so cuBLAS never allocates inside
the capture. Alpha/beta are host scalars (pointer mode host): their values are copied into
the kernel parameters at call time, i.e. baked into the graph, which is what we want.

Math mode is ``CUBLAS_DEFAULT_MATH`` (no TF32), so float32/float64 results are comparable
with the eager ``cupy.matmul`` path.

Row-major vs column-major: see :func:`gemm_args`. That function and
:func:`emulate_colmajor_gemm` are pure NumPy, so the CPU test suite checks the mapping.

Importing this module needs neither CuPy nor cuBLAS; the library is found and loaded on
first use (:func:`find_library`, :class:`Cublas`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError, DeviceError, ShapeError

CUBLAS_OP_N = 0
CUBLAS_OP_T = 1
CUBLAS_POINTER_MODE_HOST = 0
CUBLAS_DEFAULT_MATH = 0
DEFAULT_WORKSPACE_BYTES = 32 * 2**20  # NVIDIA's recommendation for Hopper (4 MiB suffices before)

_STATUS = {
    0: "CUBLAS_STATUS_SUCCESS",
    1: "CUBLAS_STATUS_NOT_INITIALIZED",
    3: "CUBLAS_STATUS_ALLOC_FAILED",
    7: "CUBLAS_STATUS_INVALID_VALUE",
    8: "CUBLAS_STATUS_ARCH_MISMATCH",
    11: "CUBLAS_STATUS_MAPPING_ERROR",
    13: "CUBLAS_STATUS_EXECUTION_FAILED",
    14: "CUBLAS_STATUS_INTERNAL_ERROR",
    15: "CUBLAS_STATUS_NOT_SUPPORTED",
    16: "CUBLAS_STATUS_LICENSE_ERROR",
}

_INT32_MAX = 2**31 - 1


# ---- the row-major -> column-major mapping (pure, CPU-testable) ----------------------


class GemmArgs(NamedTuple):
    """Arguments of one column-major ``cublas?gemm`` call computing a row-major product.

    cuBLAS's ``A`` operand is the row-major ``B`` buffer and its ``B`` operand is the row-major
    ``A`` buffer (they swap); ``C`` is the row-major ``C`` buffer.
    """

    transa: int
    transb: int
    m: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int


def gemm_args(a_shape, b_shape, trans_a: bool = False, trans_b: bool = False) -> GemmArgs:
    """cuBLAS arguments for row-major ``C (M, N) = op(A) @ op(B)``, ``op(X) = X.T if trans_x``.

    A C-contiguous (r, c) array read column-major with leading dimension c is its transpose,
    a (c, r) matrix. So the row-major C (M, N) buffer *is* the column-major Cᵀ (N, M) with
    ldc = N, and ``C = op(A) op(B)`` is ``Cᵀ = op(B)ᵀ op(A)ᵀ``: call column-major GEMM with
    the operands swapped, m = N, n = M, k = K:

    * cuBLAS A := the B buffer. Stored (rows_b, cols_b), it reads column-major as Bᵀ with
      ld = cols_b. We need op(B)ᵀ (N, K): if not trans_b, B is (K, N) and Bᵀ is already
      (N, K) → CUBLAS_OP_N; if trans_b, B is (N, K), op(B)ᵀ = B → transpose the view
      → CUBLAS_OP_T. Either way lda = cols_b = ``b_shape[1]``.
    * cuBLAS B := the A buffer, by the same argument: transb = T iff trans_a, ldb = ``a_shape[1]``.
    * ldc = N = ``C.shape[1]``.
    """
    ra, ca = (int(s) for s in a_shape)
    rb, cb = (int(s) for s in b_shape)
    M, K = (ca, ra) if trans_a else (ra, ca)
    K2, N = (cb, rb) if trans_b else (rb, cb)
    if K != K2:
        raise ShapeError(
            f"matmul: op(A) is ({M}, {K}) but op(B) is ({K2}, {N}) "
            f"(A {tuple(a_shape)}, trans_a={trans_a}; B {tuple(b_shape)}, trans_b={trans_b})"
        )
    return GemmArgs(
        transa=CUBLAS_OP_T if trans_b else CUBLAS_OP_N,
        transb=CUBLAS_OP_T if trans_a else CUBLAS_OP_N,
        m=N,
        n=M,
        k=K,
        lda=max(1, cb),
        ldb=max(1, ca),
        ldc=max(1, N),
    )


def _colmajor_view(flat: np.ndarray, rows: int, cols: int, ld: int) -> np.ndarray:
    """The (rows, cols) column-major matrix with leading dimension ``ld`` inside ``flat``."""
    item = flat.itemsize
    if rows and cols:
        assert (rows - 1) + (cols - 1) * ld < flat.size, "column-major view runs past the buffer"
    return np.lib.stride_tricks.as_strided(flat, shape=(rows, cols), strides=(item, ld * item))


def emulate_colmajor_gemm(transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc) -> None:
    """What ``cublas?gemm`` does, in NumPy, on flat 1-D buffers (for tests).

    ``C[:m, :n] = alpha * op(A) @ op(B) + beta * C`` with every matrix column-major:
    element (i, j) of a matrix with leading dimension ld is ``buf[i + j * ld]``.
    op(A) is (m, k): A is (m, k) when transa is N, (k, m) when T. op(B) is (k, n).
    """
    a = _colmajor_view(A, *((k, m) if transa == CUBLAS_OP_T else (m, k)), lda)
    b = _colmajor_view(B, *((n, k) if transb == CUBLAS_OP_T else (k, n)), ldb)
    op_a = a.T if transa == CUBLAS_OP_T else a
    op_b = b.T if transb == CUBLAS_OP_T else b
    c = _colmajor_view(C, m, n, ldc)
    result = alpha * (op_a @ op_b) + (beta * c if beta else 0)
    c[...] = result


def emulate_matmul_rowmajor(A: np.ndarray, B: np.ndarray, C: np.ndarray, trans_a=False, trans_b=False) -> None:
    """:meth:`Cublas.matmul_rowmajor` with the GEMM emulated in NumPy (same argument mapping)."""
    g = gemm_args(A.shape, B.shape, trans_a, trans_b)
    if C.shape != (g.n, g.m):
        raise ShapeError(f"C has shape {C.shape}, expected {(g.n, g.m)}")
    flat_c = C.reshape(-1)  # a view: C is C-contiguous
    emulate_colmajor_gemm(g.transa, g.transb, g.m, g.n, g.k, 1.0, B.reshape(-1), g.lda, A.reshape(-1), g.ldb, 0.0, flat_c, g.ldc)


# ---- finding and loading libcublas -------------------------------------------------


def _loaded_paths() -> list[str]:
    """libcublas.so* files already mapped into this process (e.g. by CuPy)."""
    found = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                path = line.rsplit(None, 1)[-1] if "/" in line else ""
                name = os.path.basename(path)
                if name.startswith("libcublas.so") and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found


def _candidates(major: int | None = None) -> list[str]:
    """Paths and sonames to try, best first (the CUDA major version CuPy runs first)."""
    # What CuPy itself loaded is the best match: importing its cuBLAS binding maps the library.
    # It must be a from-import: CuPy >= 14 loads libcublas in the package's __getattr__ (through
    # cuda-pathfinder) just before importing the binding, and a dotted
    # ``import cupy_backends.cuda.libs.cublas`` skips that and fails ("libcublas.so.13: cannot
    # open shared object file") unless the library is on the loader's default path.
    try:
        from cupy_backends.cuda.libs import cublas as _cupy_cublas  # noqa: F401, PLC0415
    except Exception:
        pass
    out = list(_loaded_paths())
    # cuda-pathfinder (a CuPy >= 14 dependency) finds the file CuPy uses: the nvidia-cublas wheel,
    # conda, CUDA_PATH or the system's. It also loads it, which is what we are about to do.
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib  # noqa: PLC0415

        path = load_nvidia_dynamic_lib("cublas").abs_path
        if path:
            out.append(path)
    except Exception:
        pass
    # pip wheels: nvidia-cublas-cu12 (nvidia/cublas/lib) and the CUDA 13 layout (nvidia/cu13/lib).
    for base in sys.path:
        if base and os.path.isdir(os.path.join(base, "nvidia")):
            out += sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib", "libcublas.so*")))
    for env in ("CUDA_PATH", "CUDA_HOME"):
        root = os.environ.get(env)
        if root:
            out += sorted(glob.glob(os.path.join(root, "lib64", "libcublas.so*")))
    out += sorted(glob.glob("/usr/local/cuda/lib64/libcublas.so*"))
    found = ctypes.util.find_library("cublas")
    if found:
        out.append(found)
    out += ["libcublas.so.13", "libcublas.so.12", "libcublas.so"]
    out = [p for p in dict.fromkeys(out) if "libcublasLt" not in p]
    if major is not None:
        tag = f".so.{major}"
        out.sort(key=lambda p: 0 if tag in p else 1)  # stable: keeps the order within each group
    return out


def _runtime_major() -> int | None:
    try:
        from ..backend import _import_cupy  # noqa: PLC0415

        return int(_import_cupy().cuda.runtime.runtimeGetVersion()) // 1000
    except Exception:
        return None


_LIB = None


def find_library():
    """The loaded libcublas (``ctypes.CDLL``) or raise :class:`DeviceError` listing what was tried."""
    global _LIB
    if _LIB is not None:
        return _LIB
    tried = []
    for cand in _candidates(_runtime_major()):
        try:
            lib = ctypes.CDLL(cand)
            lib.cublasDgemm_v2  # noqa: B018 - the symbols we need must be there
            lib.cublasSetWorkspace_v2  # noqa: B018
        except (OSError, AttributeError) as exc:
            tried.append(f"{cand} ({exc})")
            continue
        _declare(lib)
        _LIB = lib
        return lib
    raise DeviceError("libcublas not found for the CUDA-graph path; tried: " + "; ".join(tried[:8]))


def _declare(lib) -> None:
    vp, ci, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    sigs = {
        "cublasCreate_v2": [ctypes.POINTER(vp)],
        "cublasDestroy_v2": [vp],
        "cublasSetStream_v2": [vp, vp],
        "cublasSetWorkspace_v2": [vp, vp, sz],
        "cublasSetMathMode": [vp, ci],
        "cublasSetPointerMode_v2": [vp, ci],
        "cublasGetVersion_v2": [vp, ctypes.POINTER(ci)],
        # handle, transa, transb, m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc
        "cublasSgemm_v2": [vp, ci, ci, ci, ci, ci, vp, vp, ci, vp, ci, vp, vp, ci],
        "cublasDgemm_v2": [vp, ci, ci, ci, ci, ci, vp, vp, ci, vp, ci, vp, vp, ci],
    }
    for name, argtypes in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int


def _check(status: int, what: str) -> None:
    if status != 0:
        raise DeviceError(f"{what} failed: {_STATUS.get(status, 'status')} ({status})")


# ---- the handle ---------------------------------------------------------------------


class Cublas:
    """One cuBLAS handle bound to one stream with a preallocated workspace.

    Create it (outside any capture) on the device that will run the graph, then call
    :meth:`matmul_rowmajor` eagerly or inside ``stream.begin_capture()``/``end_capture()``.
    Keep the object alive as long as any graph that captured its calls (the workspace must
    outlive them).
    """

    def __init__(self, stream, workspace_bytes: int = DEFAULT_WORKSPACE_BYTES):
        from ..backend import _import_cupy  # noqa: PLC0415

        cupy = _import_cupy()
        self._lib = find_library()
        handle = ctypes.c_void_p()
        _check(self._lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self._handle = handle
        self.stream = stream
        # uint8 buffer from CuPy's pool: 256-byte (in practice 512-byte) aligned, as cuBLAS requires.
        self.workspace = cupy.empty(int(workspace_bytes), dtype=np.uint8)
        _check(self._lib.cublasSetStream_v2(handle, ctypes.c_void_p(stream.ptr)), "cublasSetStream")
        _check(
            self._lib.cublasSetWorkspace_v2(handle, ctypes.c_void_p(self.workspace.data.ptr), ctypes.c_size_t(self.workspace.nbytes)),
            "cublasSetWorkspace",
        )
        _check(self._lib.cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH), "cublasSetMathMode")
        _check(self._lib.cublasSetPointerMode_v2(handle, CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode")

    @property
    def version(self) -> int:
        v = ctypes.c_int()
        _check(self._lib.cublasGetVersion_v2(self._handle, ctypes.byref(v)), "cublasGetVersion")
        return v.value

    def gemm(self, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc) -> None:
        """Column-major ``C = alpha op(A) op(B) + beta C``; A, B, C are CuPy arrays of one float dtype."""
        if self._handle is None:
            raise DeviceError("this cuBLAS handle was closed")
        dt = np.dtype(C.dtype)
        if dt == np.float64:
            fn, scal = self._lib.cublasDgemm_v2, ctypes.c_double
        elif dt == np.float32:
            fn, scal = self._lib.cublasSgemm_v2, ctypes.c_float
        else:
            raise ConfigError(f"cuBLAS GEMM supports float32 and float64, got {dt}")
        for v in (m, n, k, lda, ldb, ldc):
            if not 0 <= int(v) <= _INT32_MAX:
                raise ShapeError(f"GEMM dimension {v} does not fit cuBLAS's 32-bit int")
        a_, b_ = scal(alpha), scal(beta)
        status = fn(
            self._handle, int(transa), int(transb), int(m), int(n), int(k),
            ctypes.byref(a_), ctypes.c_void_p(A.data.ptr), int(lda),
            ctypes.c_void_p(B.data.ptr), int(ldb),
            ctypes.byref(b_), ctypes.c_void_p(C.data.ptr), int(ldc),
        )  # fmt: skip
        _check(status, "cublasSgemm" if dt == np.float32 else "cublasDgemm")

    def matmul_rowmajor(self, A, B, C, trans_a: bool = False, trans_b: bool = False, alpha=1.0, beta=0.0):
        """Row-major ``C = alpha op(A) @ op(B) + beta C`` on C-contiguous CuPy arrays (see :func:`gemm_args`)."""
        for name, x in (("A", A), ("B", B), ("C", C)):
            if x.ndim != 2:
                raise ShapeError(f"matmul_rowmajor: {name} must be 2-D, got shape {tuple(x.shape)}")
            if not x.flags.c_contiguous:
                raise ShapeError(f"matmul_rowmajor: {name} must be C-contiguous")
            if x.dtype != C.dtype:
                raise ConfigError(f"matmul_rowmajor needs one dtype, got {A.dtype}, {B.dtype}, {C.dtype}")
        g = gemm_args(A.shape, B.shape, trans_a, trans_b)
        if tuple(C.shape) != (g.n, g.m):
            raise ShapeError(f"matmul_rowmajor: C has shape {tuple(C.shape)}, expected {(g.n, g.m)}")
        if g.m == 0 or g.n == 0:
            return C
        self.gemm(g.transa, g.transb, g.m, g.n, g.k, alpha, B, g.lda, A, g.ldb, beta, C, g.ldc)
        return C

    def close(self) -> None:
        if getattr(self, "_handle", None) is not None:
            try:
                self._lib.cublasDestroy_v2(self._handle)
            except Exception:
                pass
            self._handle = None

    def __del__(self):
        self.close()
