"""The first layer's forward GEMM (784 inputs) per batch size and number of units.

Narrow layers (X @ W0.T): OpenBLAS on one and on two threads against xpnet's Numba kernel
(``xpnet.ops.cpu._rows_matmul``, one thread), and the threads xpnet's BLAS policy gives the GEMM where
two cores are free. Wide, feature-major layers (``cpu.dense_step_transposed``): W0 @ X.T, where
OpenBLAS packs X.T itself, against W0 @ XT from a transposed copy, and what the copy costs (NumPy).

Usage: python bench/narrow_gemm.py [OUT.md]   (median of 500 calls per cell, best of three rounds in turn)
"""

from __future__ import annotations

import sys

import numpy as np
from threadpoolctl import threadpool_limits

from xpnet.experiments.bench.peak import median_us
from xpnet.fileio import atomic_write
from xpnet.ops import cpu, threads


def main(out: str | None = None) -> None:
    rng = np.random.default_rng(0)
    k = 784
    rows = ["| batch | units | policy threads | OpenBLAS 1 thread (µs) | OpenBLAS 2 threads (µs) | Numba kernel (µs) "
            "| kernel ÷ OpenBLAS on the policy's threads |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for m, n in [(128, 2), (128, 8), (128, 9), (128, 10), (128, 12), (128, 16), (128, 32), (128, 48), (128, 63),
                 (256, 10), (256, 16), (512, 10), (1024, 10)]:
        X = rng.standard_normal((m, k)).astype(np.float32)
        W = rng.standard_normal((n, k)).astype(np.float32)
        R = np.empty((m, n), np.float32)
        one, two, kern = [], [], []
        for _ in range(3):  # in turns: the machine's speed drifts
            with threadpool_limits(1):
                one.append(median_us(np.matmul, X, W.T, R))
            with threadpool_limits(2):
                two.append(median_us(np.matmul, X, W.T, R))
            kern.append(median_us(cpu._rows_matmul, X, W, R, np.float32(0)))
        policy = threads.gemm_threads(m, n, k, 2, 0.0)
        b1, b2, c = min(one), min(two), min(kern)
        rows.append(f"| {m} | {n} | {policy} | {b1:.1f} | {b2:.1f} | {c:.1f} | {c / (b1 if policy == 1 else b2):.2f} |")
    rows += ["", "| batch | units | threads | W0 @ X.T (µs) | W0 @ XT (µs) | saved (µs) | the copy XT = X.T (µs) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in (64, 120, 256, 512, 1024):
        m = 128
        X = rng.standard_normal((m, k)).astype(np.float32)
        XT = np.ascontiguousarray(X.T)
        W = rng.standard_normal((n, k)).astype(np.float32)
        Z = np.empty((n, m), np.float32)
        for t in (1, 2):
            nt, nn, copy = [], [], []
            with threadpool_limits(t):
                for _ in range(3):
                    nt.append(median_us(np.matmul, W, X.T, Z))
                    nn.append(median_us(np.matmul, W, XT, Z))
                    copy.append(median_us(np.copyto, XT, X.T))
            rows.append(f"| {m} | {n} | {t} | {min(nt):.1f} | {min(nn):.1f} | {min(nt) - min(nn):.1f} | {min(copy):.1f} |")
    text = "\n".join(rows) + "\n"
    print(text, end="")
    if out:
        atomic_write(out, lambda fh: fh.write(text), "w")


if __name__ == "__main__":
    main(*sys.argv[1:2])
