"""The machine's float32 GEMM peak, measured (not assumed): the denominator of "% of peak".

A large square float32 NumPy matmul, best of many short ones (a quiet moment is more
likely caught by many short runs than by a few long ones), with BLAS limited to ``threads``
threads (threadpoolctl), each thread count in its own process like every bench case. The best
of several runs estimates what the cores deliver when nothing else interferes; ``xpnet bench``
measures it before and after its cases and keeps the higher (a shared VM's speed drifts within
a run). On a shared machine it is still a lower bound of the true peak, so "% of peak" errs
high, and says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def gemm_gflops(threads: int, n: int = 1024, repeats: int = 25) -> float:
    """Best GFLOP/s of an ``n × n`` float32 matmul on ``threads`` BLAS threads (in this process)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    C = np.empty((n, n), dtype=np.float32)
    best = float("inf")
    with threadpool_limits(limits=int(threads), user_api="blas"):
        np.matmul(A, B, out=C)  # warm-up: thread start, page faults
        for _ in range(repeats):
            start = time.perf_counter()
            np.matmul(A, B, out=C)
            best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def measure_peaks(thread_counts, n: int = 1024, repeats: int = 25, timeout: float = 600) -> dict:
    """``{threads: GFLOP/s}``, each measured in a fresh subprocess; a failure is left out."""
    peaks = {}
    for threads in thread_counts:
        cmd = [sys.executable, "-m", "xpnet.experiments.bench.peak", str(int(threads)), str(n), str(repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode == 0 and lines:
            peaks[int(threads)] = json.loads(lines[-1])["gflops"]
    return peaks


def median_us(fn, *args, calls: int = 500) -> float:
    """Median microseconds of ``fn(*args)`` over ``calls`` calls, after one untimed call."""
    import numpy as np

    fn(*args)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


# A run counts as taken in a slow phase when the two-core probe around it (two_core_speedup) reads under this
# fraction of the best look of the bench: about 1.5x where two cores run apart, about 1.0x in a shared VM's slow
# phases. Relative, so a machine whose two threads never run apart (two hardware threads of one core) has none.
SLOW_FRACTION = 0.8


def in_slow_phase(run: dict, best: float | None) -> bool:
    """Whether the probe around a benchmark run (its ``two_cores``) says the machine was in a slow phase,
    against ``best``, the highest look of the bench."""
    look = run.get("two_cores")
    return "error" not in run and bool(look) and bool(best) and look < SLOW_FRACTION * best


def probe_gemm() -> tuple:
    """The two-core probe's GEMM as ``np.matmul`` arguments: 784-120-64-10's first layer, ``W0 @ XT`` into ``Z``
    (120 × 784 by 784 × 128, float32)."""
    import numpy as np

    rng = np.random.default_rng(0)
    W, XT = rng.random((120, 784), dtype=np.float32), rng.random((784, 128), dtype=np.float32)
    return W, XT, np.empty((120, 128), np.float32)


def two_core_speedup(calls: int = 300) -> float | None:
    """How much faster a small GEMM (784-120-64-10's first layer, 120 × 784 by 784 × 128) runs on two BLAS
    threads than on one, here and now (median of ``calls`` each). About 1.5× where two cores run apart; about
    1.0× while a shared VM runs two busy vCPUs at one core's speed, in phases of seconds to minutes
    (bench/results/cpu-2core-2026-11-30-xt/). None with fewer than two usable cores."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from xpnet.ops.threads import usable_cores

    if usable_cores() < 2:
        return None
    gemm = probe_gemm()
    medians = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            medians.append(median_us(np.matmul, *gemm, calls=calls))
    return medians[0] / medians[1]


def best_peaks(*measurements: dict) -> dict:
    """The highest GFLOP/s per thread count over several :func:`measure_peaks` (e.g. a run's start
    and end): the closest to the true peak, so the least flattering denominator."""
    best: dict = {}
    for peaks in measurements:
        for threads, gflops in peaks.items():
            best[threads] = max(gflops, best.get(threads, 0.0))
    return best


if __name__ == "__main__":
    threads, size, reps = (int(a) for a in sys.argv[1:4])
    print(json.dumps({"threads": threads, "n": size, "gflops": gemm_gflops(threads, size, reps)}), flush=True)
