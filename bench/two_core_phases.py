"""Whether the VM's two cores slow each other down, process by process: a small GEMM on one thread and on
two, with the threads where Linux puts them and pinned to separate cores.

Each of N fresh processes, one after another, times ``W0 @ XT`` (120 × 784 by 784 × 128, float32: the first
layer of 784-120-64-10) on OpenBLAS with one thread, with two threads, and with two threads after pinning
the calling thread to its core and every other thread of the process to the other cores
(``os.sched_setaffinity`` by thread id; Linux only). Median of 2000 calls each.

Usage: python bench/two_core_phases.py [N] [OUT.md]
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

CHILD = "child"
CALLS = 2000


def child() -> None:
    import numpy as np
    from threadpoolctl import threadpool_limits

    from xpnet.experiments.bench.peak import median_us, probe_gemm

    gemm = probe_gemm()  # the bench's two-core probe's GEMM
    with threadpool_limits(1):
        one = median_us(np.matmul, *gemm, calls=CALLS)
    two = median_us(np.matmul, *gemm, calls=CALLS)
    me, tasks = threading.get_native_id(), [int(t) for t in os.listdir("/proc/self/task")]
    saved = {t: os.sched_getaffinity(t) for t in tasks}
    stat = open(f"/proc/self/task/{me}/stat", encoding="ascii").read()
    here = int(stat[stat.index(")") + 2:].split()[36])  # the core this thread last ran on
    for t in tasks:
        os.sched_setaffinity(t, {here} if t == me else (saved[t] - {here}) or saved[t])
    pinned = median_us(np.matmul, *gemm, calls=CALLS)
    for t, mask in saved.items():
        os.sched_setaffinity(t, mask)
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} {one:.0f} {two:.0f} {pinned:.0f}")


def main(n: int = 20, out: str | None = None) -> None:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", OPENBLAS_THREAD_TIMEOUT="4")  # as the xpnet command sets
    rows = ["| process | UTC | 1 thread (µs) | 2 threads (µs) | 2 threads, pinned apart (µs) |",
            "|---:|---|---:|---:|---:|"]
    for i in range(1, n + 1):
        proc = subprocess.run([sys.executable, __file__, CHILD], capture_output=True, text=True, env=env, check=True)
        rows.append(f"| {i} | " + " | ".join(proc.stdout.split()) + " |")
        print(rows[-1], flush=True)
    if out:
        from xpnet.fileio import atomic_write

        atomic_write(out, lambda fh: fh.write("\n".join(rows) + "\n"), "w")


if __name__ == "__main__":
    if sys.argv[1:2] == [CHILD]:
        child()
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 20, *sys.argv[2:3])
