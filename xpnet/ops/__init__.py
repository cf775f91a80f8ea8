"""Fused hot-spot operations, with one signature and three implementations.

* ``reference`` — plain ``xp`` code (NumPy or CuPy): the definition every other
  implementation is tested against.
* ``cpu`` — Numba kernels for NumPy arrays (one pass instead of ~10 for Adam).
* ``cuda`` — hand-written CUDA C from top-level ``kernels/`` via ``cupy.RawModule``.

``get_ops(xp)`` picks the fastest one available for the array module in use.
"""

from __future__ import annotations


def get_ops(xp, fast: bool = True):
    """The ops module to use for ``xp``; ``fast=False`` forces the reference.

    Imports happen here, not above: ``xpnet.ops.threads`` must load without NumPy (the command
    line sets OpenBLAS's environment through it before NumPy loads)."""
    import numpy as np  # noqa: PLC0415

    from xpnet.ops import reference  # noqa: PLC0415

    if not fast:
        return reference
    if xp is np:
        from xpnet.ops import cpu  # noqa: PLC0415 - numba is optional

        return cpu if cpu.AVAILABLE else reference
    from xpnet.ops import cuda  # noqa: PLC0415 - imports cupy

    return cuda
