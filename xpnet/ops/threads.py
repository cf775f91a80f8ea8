"""BLAS threads per GEMM, chosen from the GEMM's shape and what else the machine is running.

OpenBLAS splits every GEMM over all its threads, and its idle workers spin. With a core taken
by another program, each split GEMM waits for the worker that shares that core (a scheduler
time slice per GEMM): a training step of small GEMMs then runs several times slower than on
one thread, and even large ones lose to one thread (bench/results/ has the measurements).
So, inside :func:`blas_policy` (entered once by ``Trainer.run``), the CPU ops' ``matmul`` asks
:func:`gemm_threads` before every GEMM: one thread for small GEMMs and whenever the cores
are not free, more only for large GEMMs on otherwise idle cores. Outside the context nothing
changes: the user's own NumPy keeps its BLAS settings, and the count in force when the
context was entered (e.g. ``OPENBLAS_NUM_THREADS``) is the ceiling.

Two modes, chosen by ``XPNET_BLAS_THREADS``:

* ``shape`` (the default): threads from the GEMM's shape and the usable cores only. Every run of
  a configuration on a machine makes the same choices, so its weights are bitwise reproducible (a
  resumed run equals an uninterrupted one; OpenBLAS rounds differently on 1 and 2 threads).
* ``adaptive``: the machine state too — other processes' CPU use, read from ``/proc/stat`` minus
  this process's own time over the last :data:`WINDOW_S` seconds (no sleeping, no sampling
  thread); a run starts on one thread until the first window has been seen. Faster beside a busy
  program, but the choices (and so the last bits of the weights) depend on the load.

threadpoolctl sets the counts.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from xpnet.backend import load_average

# A GEMM of at least this many multiply-adds (m·n·k) per thread is worth splitting: below it the
# split's synchronisation costs more than the second core brings (batch-128 GEMMs of 784-10-10 are
# about 1e6; 784-1024-10's large ones 1e8).
MIN_WORK_PER_THREAD = 1 << 22
# The shared dimension below which a split GEMM is memory-bound stores (dA = dZ @ W with 10 classes).
MIN_K = 32
# Other processes using at least this much of a core take it away from us.
BUSY_CORE = 0.3
WINDOW_S = 0.25


def gemm_threads(m: int, n: int, k: int, cores: int, others_busy: float) -> int:
    """Threads for one ``(m × k) @ (k × n)`` GEMM with ``cores`` usable cores of which other
    processes keep ``others_busy`` (in cores, e.g. 1.0 for one busy program) occupied.

    A pure function: the policy's whole decision, tested without timing."""
    free = int(cores) - _taken(others_busy)
    if free < 2 or int(k) < MIN_K:
        return 1
    by_work = (int(m) * int(n) * int(k)) // MIN_WORK_PER_THREAD
    return max(1, min(free, by_work))


def _taken(others_busy: float) -> int:
    """Whole cores that other processes occupy: a core counts once they use BUSY_CORE of it."""
    whole = int(others_busy)
    return whole + (1 if others_busy - whole >= BUSY_CORE else 0)


def numba_threads(available: int) -> int:
    """Threads for Numba's parallel loops (the fused Adam): all ``available`` only when the user's
    ``OMP_WAIT_POLICY=passive`` makes idle workers sleep. Numba's default pool spins after each
    parallel loop and steals the cores the next GEMM needs (measured on 2 cores: two
    128x784x1024 GEMMs + Adam took 8.0 ms with a 2-thread Adam, 4.7 ms with NumPy's)."""
    if os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive":
        return int(available)
    return 1


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


class MachineLoad:
    """Other processes' CPU use in cores, averaged over windows of at least ``window_s`` seconds.

    Reads ``/proc/stat`` (all CPUs' busy jiffies) and this process's CPU time (every thread of
    ours, spinning BLAS workers included) and takes the difference. Where ``/proc/stat`` is
    missing, the 1-minute load average stands in, less one for this process. Until the first
    window has passed, :meth:`others` is ``assume`` (default: every core taken, the safe guess)."""

    def __init__(self, window_s: float = WINDOW_S, assume: float | None = None):
        self.window_s = float(window_s)
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._value = float(_online_cpus() if assume is None else assume)
        self._last = self._sample()
        self._next = time.monotonic() + self.window_s

    def _sample(self):
        try:
            with open("/proc/stat", encoding="utf-8") as fh:
                fields = fh.readline().split()[1:]
        except OSError:
            return None
        values = [int(v) for v in fields[:8]]
        busy = sum(values) - values[3] - values[4]  # all but idle and iowait (steal counts as taken)
        own = os.times()
        return busy, sum(values), own.user + own.system

    def others(self) -> float:
        """Other processes' busy cores (refreshed at most once per window; cheap otherwise)."""
        now = time.monotonic()
        if now < self._next:
            return self._value
        self._next = now + self.window_s
        sample = self._sample()
        if sample is None or self._last is None:
            self._value = max(0.0, (load_average() or 1.0) - 1.0)
            return self._value
        (busy0, total0, own0), (busy1, total1, own1) = self._last, sample
        self._last = sample
        elapsed = (total1 - total0) / self._hz / _online_cpus()
        if elapsed <= 0:
            return self._value
        self._value = max(0.0, ((busy1 - busy0) / self._hz - (own1 - own0)) / elapsed)
        return self._value


def _online_cpus() -> int:
    """Every online CPU (``/proc/stat``'s totals cover them all, whatever our affinity)."""
    return os.cpu_count() or 1


MODES = ("shape", "adaptive")


def policy_mode() -> str:
    """``XPNET_BLAS_THREADS``: ``shape`` (default, reproducible) or ``adaptive`` (follows the load)."""
    mode = os.environ.get("XPNET_BLAS_THREADS", "shape").strip().lower() or "shape"
    if mode not in MODES:
        from xpnet.errors import ConfigError  # noqa: PLC0415

        raise ConfigError(f"XPNET_BLAS_THREADS={mode!r}: use one of {', '.join(MODES)}")
    return mode


class _Policy:
    """The active policy: OpenBLAS's controllers, the ceiling, the current count, the load monitor
    (adaptive mode only)."""

    def __init__(self, controllers, ceiling: int, mode: str = "shape"):
        self.controllers = controllers
        self.ceiling = ceiling
        self.current = None
        self.cores = min(usable_cores(), ceiling)
        self.load = MachineLoad() if mode == "adaptive" else None

    def before_gemm(self, m: int, n: int, k: int) -> None:
        others = self.load.others() if self.load is not None else 0.0
        want = gemm_threads(m, n, k, self.cores, others) if self.cores > 1 else 1
        if want != self.current:
            for lib in self.controllers:
                lib.set_num_threads(want)
            self.current = want


_active: _Policy | None = None


def _blas_controllers():
    """threadpoolctl's controllers of the BLAS libraries loaded now ([] without threadpoolctl).
    Looked up on every entry to :func:`blas_policy` (a few ms): a library loaded since counts too."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency; stay correct without it
        return []
    import numpy  # noqa: F401 - numpy's BLAS must be loaded before it is looked for

    return list(ThreadpoolController().select(user_api="blas").lib_controllers)


def before_gemm(m: int, n: int, k: int) -> None:
    """Set the BLAS thread count for the next ``(m × k) @ (k × n)`` GEMM; nothing outside :func:`blas_policy`."""
    if _active is not None:
        _active.before_gemm(m, n, k)


@contextlib.contextmanager
def blas_policy():
    """Choose BLAS threads per GEMM inside this block (see the module docstring); restores the
    libraries' thread counts on exit. Nested blocks share the outer one's policy."""
    global _active
    if _active is not None:
        yield _active
        return
    controllers = _blas_controllers()
    saved = [lib.get_num_threads() for lib in controllers]
    _active = _Policy(controllers, max(saved, default=1), policy_mode())
    # Numba's count for this thread, set once here rather than around every Adam step (~9 us a call).
    numba = sys.modules.get("numba")
    numba_saved = numba.get_num_threads() if numba is not None else None
    if numba is not None:
        numba.set_num_threads(numba_threads(numba_saved))
    try:
        yield _active
    finally:
        _active = None
        for lib, n in zip(controllers, saved):
            lib.set_num_threads(n)
        if numba is not None:
            numba.set_num_threads(numba_saved)
