"""The split step against the step of two multi-threaded BLAS GEMMs, for one hidden layer.

xpnet's CPU step for a network with one wide hidden layer (``xpnet.ops.cpu._dense_step_split``) cuts
the layer's units into one part per core: each part's GEMMs are single-threaded BLAS calls and its
small kernels run beside the other part's. With ``cpu.SPLIT_STEP`` off, the same step runs its two
large GEMMs on a two-thread BLAS and the small kernels between them on one thread. This times both
(the dense step and Adam, batch 128, float32, inside the BLAS policy as a training run has it), in
turns within one process, and reports the median of the paired ratios: the machine's speed drifts
over minutes, a ratio of neighbouring blocks much less.

Usage: python bench/split_step.py [OUT.md]   (40 blocks of 40 steps per path and width)
"""

from __future__ import annotations

import sys

from xpnet.ops import threads

threads.let_idle_workers_sleep()  # as the xpnet command: before NumPy loads OpenBLAS

import numpy as np  # noqa: E402

from xpnet.experiments.bench.peak import median_us  # noqa: E402
from xpnet.fileio import atomic_write  # noqa: E402
from xpnet.ops import cpu  # noqa: E402

BLOCKS, STEPS = 40, 40


def _case(hidden: int, m: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = (784, hidden, 10)
    n = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    params = (rng.standard_normal(n) * 0.05).astype(np.float32)
    grads, mom, vel = (np.zeros(n, np.float32) for _ in range(3))
    X = rng.random((m, 784)).astype(np.float32)
    XT = np.ascontiguousarray(X.T)
    labels = rng.integers(0, 10, m).astype(np.int32)
    Z = np.zeros(m * (hidden + 10), np.float32)
    H, dA = np.zeros(m * hidden, np.float32), np.zeros(m * hidden, np.float32)
    G, rows = np.zeros((m, 10), np.float32), np.zeros(m, np.float32)
    loss, correct, t = np.zeros(1), np.zeros(1, np.int64), np.zeros(1, np.int64)

    def step():
        cpu.dense_step(X, labels, params, grads, sizes, Z, H, dA, G, rows, loss, correct, t, XT=XT)
        cpu.adam_step(params, grads, mom, vel, 10, 1e-3, 0.9, 0.999, 1e-8)

    return step


def main(out: str | None = None) -> None:
    rows = ["| hidden | cores | two-thread GEMMs (µs/step) | split (µs/step) | split ÷ two-thread, paired median "
            "| quartiles |", "|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(rows), flush=True)
    for hidden in (128, 256, 512, 1024):
        step = _case(hidden)
        with threads.blas_policy() as policy:
            for _ in range(20):  # compile, warm the caches, let the policy count the cores
                step()
            times = {True: [], False: []}
            ratios = []
            for block in range(BLOCKS):
                for split in ((True, False) if block % 2 else (False, True)):
                    cpu.SPLIT_STEP = split
                    times[split].append(median_us(step, calls=STEPS))
                ratios.append(times[True][-1] / times[False][-1])
            cpu.SPLIT_STEP = True
            cores = policy.cores
        q1, q3 = np.percentile(ratios, [25, 75])
        rows.append(f"| {hidden} | {cores} | {np.median(times[False]):.0f} | {np.median(times[True]):.0f} "
                    f"| {np.median(ratios):.3f} | {q1:.3f}–{q3:.3f} |")
        print(rows[-1], flush=True)
    text = "\n".join(rows) + "\n"
    if out:
        atomic_write(out, lambda fh: fh.write(text), "w")


if __name__ == "__main__":
    main(*sys.argv[1:2])
