"""NumPy's own OpenBLAS GEMM as a C function address, for Numba kernels that split a GEMM over
their own threads (``xpnet.ops.cpu``'s split dense step).

Why not ``np.dot`` inside Numba: Numba's ``np.dot`` calls SciPy's BLAS (``scipy.linalg.cython_blas``),
a second OpenBLAS with its own thread pool and kernels, so the split step would round unlike the
rest of the run. NumPy's wheels ship OpenBLAS with a 64-bit integer interface and prefixed names
(``scipy_cblas_sgemm64_``); threadpoolctl finds the library and ctypes the symbol. Any other BLAS
(MKL, Accelerate, a 32-bit interface) gives address 0, and the callers keep NumPy's ``matmul``.

This module does not import Numba; :func:`gemm_address` loads NumPy.
"""

from __future__ import annotations

import ctypes
import functools
import os

# The ILP64 CBLAS names NumPy's OpenBLAS exports (with and without NumPy's "scipy_" prefix).
_SYMBOLS = {"float32": ("scipy_cblas_sgemm64_", "cblas_sgemm64_"),
            "float64": ("scipy_cblas_dgemm64_", "cblas_dgemm64_")}
# CBLAS's enums, as the kernels pass them.
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _numpy_openblas_paths() -> list[str]:
    """The OpenBLAS libraries loaded from inside NumPy's installation (threadpoolctl's list)."""
    import numpy  # noqa: PLC0415 - loads the library first
    from threadpoolctl import threadpool_info  # noqa: PLC0415

    root = os.path.dirname(os.path.dirname(os.path.abspath(numpy.__file__)))  # site-packages: numpy.libs beside numpy
    return [lib["filepath"] for lib in threadpool_info()
            if lib.get("internal_api") == "openblas" and os.path.basename(lib.get("filepath", "")).startswith(
                "libscipy_openblas") and os.path.abspath(lib["filepath"]).startswith(root)]


@functools.lru_cache(maxsize=None)
def gemm_address(dtype_name: str) -> int:
    """The address of NumPy's ``cblas_?gemm`` (64-bit integers) for ``float32`` or ``float64``;
    0 where NumPy's BLAS is not such an OpenBLAS."""
    names = _SYMBOLS.get(str(dtype_name), ())
    for path in _numpy_openblas_paths() if names else []:
        try:
            lib = ctypes.CDLL(path)
        except OSError:  # pragma: no cover - threadpoolctl found it loaded
            continue
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                return int(ctypes.cast(fn, ctypes.c_void_p).value or 0)
    return 0
