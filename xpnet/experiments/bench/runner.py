"""Runs benchmark cases, each in a fresh subprocess, and collects their results.

The parent loads and normalises the data once and writes it as ``.npy`` files; each
child memory-maps them, runs one case (``workloads.run_case``) and prints one JSON line.
A peer that is not installed (or has no GPU) becomes a "skipped" row with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from xpnet.backend import load_average
from xpnet.experiments.bench.peak import in_slow_phase

PEER_MODULES = {"torch": "torch", "torch-graph": "torch", "sklearn": "sklearn", "jax": "jax"}


def prepare_data(dataset: str, folder: Path, limit: int | None = None, data_dir=None) -> dict:
    """Normalised float32 train/test arrays saved in ``folder``; returns their description.

    ``data_dir``: a folder with the four IDX files, instead of looking ``dataset`` up."""
    from xpnet.data import load_dataset
    from xpnet.data.preprocess import Normalizer

    ds = load_dataset(dataset if not data_dir else None, data_dir=data_dir)
    X = ds.X_train.reshape(len(ds.X_train), -1)
    y = ds.y_train
    if limit:
        X, y = X[:limit], y[:limit]
    norm = Normalizer().fit(X)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "X_train.npy", norm.transform(X))
    np.save(folder / "y_train.npy", y.astype(np.int64))
    np.save(folder / "X_test.npy", norm.transform(ds.X_test.reshape(len(ds.X_test), -1)))
    np.save(folder / "y_test.npy", ds.y_test.astype(np.int64))
    return {"dataset": ds.name, "n_train": len(X), "n_test": len(ds.X_test), "n_classes": ds.n_classes,
            "n_features": X.shape[1]}


def load_data(folder: Path) -> dict:
    return {name: np.load(folder / f"{name}.npy") for name in ("X_train", "y_train", "X_test", "y_test")}


def unavailable_reason(case: dict) -> str | None:
    """Why a case cannot run here (missing library or device), or None."""
    module = PEER_MODULES.get(case["impl"])
    if module and importlib.util.find_spec(module) is None:
        return f"{module} not installed"
    gpu = case["device"] != "cpu"
    if case["impl"] in ("sklearn", "jax", "xpnet-1thread") and gpu:
        return "CPU only"
    if case["impl"] == "torch-graph" and not gpu:
        return "CUDA graphs need a GPU"
    if case["impl"] == "xpnet-eager" and not gpu:
        return "the eager/graph split exists on GPU only"
    if gpu and case["impl"].startswith("xpnet"):
        from xpnet import backend

        if not backend.gpu_available():
            return "no CuPy/CUDA device"
    if gpu and case["impl"] in ("torch", "torch-graph"):
        import torch

        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
    return None


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def run_in_subprocess(case: dict, data_dir: Path, timeout: float = 1800, module: str = "xpnet.experiments.bench.runner",
                      threads: int | None = None) -> dict:
    """Run ``python -m module CASE DATA_DIR`` and return the JSON line it prints (or the case with an error).

    ``threads``: the thread count of every library in the child (OpenMP, OpenBLAS, MKL, Numba;
    PyTorch reads OMP_NUM_THREADS); None leaves each library's default. An xpnet child gets the
    idle-worker settings the ``xpnet`` command gives itself, a peer its libraries' defaults
    (:func:`xpnet.ops.threads.child_environ`).
    """
    from xpnet.ops.threads import child_environ

    cmd = [sys.executable, "-m", module, json.dumps(case), str(data_dir)]
    env = child_environ(xpnet=str(case.get("impl", "")).startswith("xpnet"))
    if threads:
        env.update({var: str(int(threads)) for var in THREAD_VARS})
    load_before = load_average()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:  # the child is killed; a collapsed peer becomes a row that says so
        return dict(case, error=f"timed out after {timeout:.0f} s", load_before=load_before)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return dict(case, error=tail)
    # The 1-minute load average around the case: on a shared machine, the figure's context.
    return dict(json.loads(lines[-1]), load_before=load_before,
                load_after=load_average())


def take_outside_slow_phases(take, retakes: int, best=lambda: None, say=lambda line: None) -> dict:
    """One run from ``take()``, taken again (up to ``retakes`` more times) while the probe around it
    says the machine was in a slow phase (:func:`~xpnet.experiments.bench.peak.in_slow_phase` against
    ``best()``, the bench's best look so far): such a phase slows whichever implementation it meets.
    Keeps the fastest take (a timing before an error): the probe says when to look again, but not which
    take ran faster (bench/results/cpu-2core-2026-11-30-memory/). The others stay on record in its
    ``slow_takes`` (their median epoch and phase)."""
    takes = [take()]
    while in_slow_phase(takes[-1], best()) and len(takes) <= retakes:
        say(f"slow phase (two cores {takes[-1]['two_cores']:.2f}× one, the best look {best():.2f}×): taken again")
        takes.append(take())
    timed = [r for r in takes if "error" not in r and r.get("median_epoch_s") is not None]
    kept = min(timed, key=lambda r: r["median_epoch_s"]) if timed else takes[0]
    aside = [{"median_epoch_s": r.get("median_epoch_s"), "two_cores": r.get("two_cores")} for r in takes if r is not kept]
    return dict(kept, slow_takes=aside) if aside else kept


# A pure-Python busy loop that ends itself once its parent is gone: a bench killed by a signal that
# skips its cleanup (SIGTERM, SIGKILL) leaves no program spinning behind it. It looks about every 20 ms.
BUSY_LOOP = ("import os\nparent = os.getppid()\n"
             "while os.getppid() == parent:\n    for _ in range(500_000):\n        pass\n")


@contextlib.contextmanager
def busy_processes(n: int):
    """``n`` other programs keeping a core busy each (:data:`BUSY_LOOP`) for the block: the machine
    state of a laptop that runs something else. Ended (by their own pid) afterwards."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(int(n))]
    try:
        if procs:
            time.sleep(0.5)  # running before the case starts
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _child(argv) -> None:
    from xpnet.experiments.bench.workloads import run_case

    case, data_dir = json.loads(argv[0]), Path(argv[1])
    print(json.dumps(run_case(case, load_data(data_dir))), flush=True)


if __name__ == "__main__":
    _child(sys.argv[1:])
