"""Subnormal floats flushed to zero on the training thread (x86's FTZ and DAZ bits in MXCSR).

On x86 every arithmetic operation that reads or produces a subnormal float (below 1.2e-38 in
float32) can take a microcode assist, tens to hundreds of cycles. Training produces them (an
exponential of a logit far below its row's maximum, products of tiny gradients, moments decaying
towards zero): the first epoch of 784-10-10 on Fashion-MNIST ran about three times slower than
with them flushed (bench/results/cpu-2core-2026-11-30-run/README.md). Flushed, they become zero,
which changes no accuracy: XLA runs JAX's CPU code the same way.

Only the calling thread's MXCSR changes (BLAS worker threads keep theirs), and only inside
:func:`flush_denormals`. NumPy and the standard library cannot set MXCSR, so two LLVM intrinsics are
compiled through Numba (a dependency already) rather than shipping a C extension for two
instructions. Elsewhere (no Numba, not x86-64) the context changes nothing.
"""

from __future__ import annotations

import contextlib
import platform

FTZ = 0x8000  # flush-to-zero: subnormal results become zero
DAZ = 0x0040  # denormals-are-zero: subnormal inputs read as zero

_X86 = platform.machine().lower() in ("x86_64", "amd64")
try:
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - numba is a dependency
    njit = None

if _X86 and njit is not None:

    def _call(builder, name, ptr):
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        builder.call(fn, [builder.bitcast(ptr, ir.IntType(8).as_pointer())])

    @intrinsic
    def _stmxcsr(typingctx):
        def codegen(context, builder, sig, args):
            ptr = cgutils.alloca_once(builder, ir.IntType(32))
            _call(builder, "llvm.x86.sse.stmxcsr", ptr)
            return builder.load(ptr)

        return types.uint32(), codegen

    @intrinsic
    def _ldmxcsr(typingctx, value):
        def codegen(context, builder, sig, args):
            ptr = cgutils.alloca_once(builder, ir.IntType(32))
            builder.store(args[0], ptr)
            _call(builder, "llvm.x86.sse.ldmxcsr", ptr)
            return context.get_dummy_value()

        return types.void(types.uint32), codegen

    @njit(cache=True)
    def _get():
        return _stmxcsr()

    @njit(cache=True)
    def _set(value):
        _ldmxcsr(value)

else:  # pragma: no cover - not x86-64, or no Numba
    _get = _set = None


def flushing() -> bool:
    """Whether this thread flushes subnormals now (False where it cannot)."""
    return _get is not None and (int(_get()) & (FTZ | DAZ)) == FTZ | DAZ


@contextlib.contextmanager
def flush_denormals():
    """Flush subnormal floats to zero on this thread inside the block; the previous mode (and the
    sticky exception flags) come back on exit. Yields whether flushing is on."""
    if _get is None:
        yield False
        return
    import numpy as np

    saved = _get()
    _set(np.uint32(int(saved) | FTZ | DAZ))
    try:
        yield True
    finally:
        _set(saved)
