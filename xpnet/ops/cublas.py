"""cuBLAS GEMMs that work inside a CUDA stream capture, through NVIDIA's ``nvmath-python``.

Why not ``cupy.matmul``: CuPy's cuBLAS wrappers call ``setStream`` first, which raises while
the stream is capturing (cupy/cupy#6290). Why ``nvmath.bindings.cublas`` rather than our own
ctypes declarations: NVIDIA keeps those bindings in step with every cuBLAS release and finds
libcublas itself (the ``nvidia-cublas`` wheel or a toolkit, via cuda-pathfinder); they are
thin calls with no capture guard. It costs a 5.5 MB wheel plus ``cuda-bindings``/``cuda-core`` and
an import of a second or more, paid only when a graph is set up (imported lazily; in the
``gpu-cuda12``/``gpu-cuda13`` extras, whose nvmath ``cu12``/``cu13`` extra brings libcublas).

NVIDIA's rules for capturing cuBLAS: bind the handle to the capture stream and give it a
workspace *before* capturing, so it never allocates inside. Alpha/beta are host scalars
(pointer mode host): read at call time, i.e. baked into the graph. Math mode is the default
(no TF32), so results compare with the eager ``cupy.matmul`` path.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import numpy as np

from xpnet.errors import ConfigError, DeviceError, ShapeError

CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
DEFAULT_WORKSPACE_BYTES = 32 * 2**20  # NVIDIA's recommendation for Hopper


class GemmArgs(NamedTuple):
    """One column-major ``cublas?gemm`` call computing a row-major product: cuBLAS's ``A`` is
    the row-major ``B`` buffer and its ``B`` the row-major ``A`` (they swap)."""

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

    A C-contiguous (r, c) buffer read column-major (ld = c) is its transpose. So row-major
    C (M, N) is column-major Cᵀ (N, M), and ``Cᵀ = op(B)ᵀ op(A)ᵀ``: a column-major GEMM with
    the operands swapped, m = N, n = M, k = K; each operand is transposed by cuBLAS exactly
    when it was asked to be here, and its leading dimension is its stored column count.
    """
    ra, ca = (int(s) for s in a_shape)
    rb, cb = (int(s) for s in b_shape)
    M, K = (ca, ra) if trans_a else (ra, ca)
    K2, N = (cb, rb) if trans_b else (rb, cb)
    if K != K2:
        raise ShapeError(f"matmul: op(A) is ({M}, {K}) but op(B) is ({K2}, {N}) "
                         f"(A {tuple(a_shape)}, trans_a={trans_a}; B {tuple(b_shape)}, trans_b={trans_b})")
    return GemmArgs(CUBLAS_OP_T if trans_b else CUBLAS_OP_N, CUBLAS_OP_T if trans_a else CUBLAS_OP_N,
                    N, M, K, max(1, cb), max(1, ca), max(1, N))


INSTALL_HINT = "pip install 'xpnet[gpu-cuda12]' or 'xpnet[gpu-cuda13]' (nvmath-python with its cu12/cu13 extra)"


def bindings():
    """``nvmath.bindings.cublas``, or a DeviceError with the import's full error and how to fix it."""
    try:
        from nvmath.bindings import cublas  # noqa: PLC0415 - optional, and slow to import
    except Exception as exc:  # ImportError, or a mismatched cuda-core / cuda-bindings failing inside nvmath
        raise DeviceError(f"the CUDA-graph step needs nvmath-python for cuBLAS inside a capture "
                          f"({type(exc).__name__}: {exc}); {INSTALL_HINT}") from None
    return cublas


def library_version() -> str:
    """The cuBLAS version, read through nvmath (loads libcublas; needs no device), or a
    DeviceError with the full reason libcublas cannot be loaded."""
    lib = bindings()
    try:
        return ".".join(str(lib.get_property(k)) for k in (0, 1, 2))  # libraryPropertyType MAJOR, MINOR, PATCH
    except Exception as exc:
        raise DeviceError(f"nvmath-python cannot load libcublas ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from None


class Cublas:
    """One cuBLAS handle bound to one stream, with its workspace; create it outside any capture.

    Keep it alive as long as any graph that captured its calls (the workspace must outlive
    them); :meth:`close` (or garbage collection, never interpreter exit, when the CUDA
    context may already be gone) destroys the handle.
    """

    def __init__(self, stream, workspace_bytes: int = DEFAULT_WORKSPACE_BYTES):
        from xpnet.backend import _import_cupy  # noqa: PLC0415

        lib = self._lib = bindings()
        self._handle = lib.create()
        self._finalizer = weakref.finalize(self, lib.destroy, self._handle)
        self._finalizer.atexit = False
        self.stream = stream
        self.workspace = _import_cupy().empty(int(workspace_bytes), dtype=np.uint8)  # 256-byte aligned
        lib.set_stream(self._handle, stream.ptr)
        lib.set_workspace(self._handle, self.workspace.data.ptr, self.workspace.nbytes)
        lib.set_math_mode(self._handle, lib.Math.DEFAULT_MATH)
        lib.set_pointer_mode(self._handle, lib.PointerMode.HOST)
        # alpha = 1, beta = 0 per dtype, in host memory that lives as long as the handle.
        self._scalars = {np.dtype(dt): np.array([1, 0], dtype=dt) for dt in (np.float32, np.float64)}

    def matmul_rowmajor(self, A, B, C, trans_a: bool = False, trans_b: bool = False):
        """Row-major ``C = op(A) @ op(B)`` on C-contiguous CuPy arrays of one float dtype."""
        if not self._finalizer.alive:
            raise DeviceError("this cuBLAS handle was closed")
        for name, x in (("A", A), ("B", B), ("C", C)):
            if x.ndim != 2 or not x.flags.c_contiguous:
                raise ShapeError(f"matmul_rowmajor: {name} must be 2-D and C-contiguous, got {tuple(x.shape)}")
            if x.dtype != C.dtype or x.dtype not in self._scalars:
                raise ConfigError(f"matmul_rowmajor needs one float32/float64 dtype, got {A.dtype}, {B.dtype}, {C.dtype}")
        g = gemm_args(A.shape, B.shape, trans_a, trans_b)
        if tuple(C.shape) != (g.n, g.m):
            raise ShapeError(f"matmul_rowmajor: C has shape {tuple(C.shape)}, expected {(g.n, g.m)}")
        if g.m and g.n:
            one_zero = self._scalars[np.dtype(C.dtype)]
            gemm = self._lib.sgemm if C.dtype == np.float32 else self._lib.dgemm
            gemm(self._handle, g.transa, g.transb, g.m, g.n, g.k, one_zero.ctypes.data, B.data.ptr, g.lda,
                 A.data.ptr, g.ldb, one_zero.ctypes.data + one_zero.itemsize, C.data.ptr, g.ldc)
        return C

    def close(self) -> None:
        self._finalizer()
