"""Shared fixtures: where the real data sets live on this machine (tests skip when absent)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def shared_mnist_dir() -> Path:
    """The canonical MNIST test set (t10k files only) shipped beside the checkout."""
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST test set not found in {SHARED_MNIST}")
    return SHARED_MNIST


@pytest.fixture
def fashion_dir() -> Path:
    """Debian's dataset-fashion-mnist install (60k/10k)."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return FASHION_DIR


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never let a test read or fill the user's real ~/.cache/xpnet."""
    monkeypatch.setenv("XPNET_DATA", str(tmp_path_factory.mktemp("xpnet-cache")))


@pytest.fixture(autouse=True)
def _blas_threads_from_shape_only(monkeypatch):
    """Tests compare runs bit for bit, so their BLAS thread counts must not follow the machine's load
    between two runs: the default mode counts free cores once per run (xpnet/ops/threads.py), here the
    shape-only mode. The run mode's own tests (test_threads.py, test_recipe.py) unset it."""
    monkeypatch.setenv("XPNET_BLAS_THREADS", "shape")


def has_cuda() -> bool:
    if os.environ.get("XPNET_NO_GPU"):
        return False
    from xpnet.backend import gpu_available

    return gpu_available()


gpu = pytest.mark.skipif(not has_cuda(), reason="needs CuPy and a CUDA device")


class KernelDevice:
    """Where a kernel test runs: CuPy on a real GPU, or NumPy arrays through the CPU emulator."""

    def __init__(self, name: str, xp):
        self.name, self.xp = name, xp

    def __repr__(self) -> str:
        return self.name


@pytest.fixture(scope="session")
def cuda_emulator(tmp_path_factory):
    """Every kernels/*.cu compiled once per session for the CPU emulator (tools/cuda_emulator/)."""
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the CUDA kernel emulator compiles the .cu files with it")
    from tools.cuda_emulator import Emulator

    emulator = Emulator(REPO / "kernels", tmp_path_factory.mktemp("cuda-emulator"))
    emulator.build_all()
    return emulator


@pytest.fixture(params=["emulated", "emulated-reversed", "cuda"])
def kernel_device(request, monkeypatch):
    """Runs a test of ``xpnet.ops.cuda`` three ways: on the CPU emulator with threads in lane
    order, in reverse order (a race shows as a difference), and on a real GPU when there is one."""
    if request.param == "cuda":
        if not has_cuda():
            pytest.skip("needs CuPy and a CUDA device")
        import cupy

        return KernelDevice("cuda", cupy)
    from tools.cuda_emulator import install

    emulator = request.getfixturevalue("cuda_emulator")
    emulator.reverse = request.param == "emulated-reversed"
    install(monkeypatch, emulator)
    return KernelDevice(request.param, np)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@contextlib.contextmanager
def serve_folder(folder):
    """Serve ``folder`` over HTTP on 127.0.0.1:<free port>; yields the base URL (for download tests)."""
    import http.server
    import threading
    from functools import partial

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def write_synthetic_idx(folder, n_train=400, n_test=100, side=28, seed=0, label_count=None):
    """A tiny MNIST-shaped IDX data set: ten classes, each a bright bar at its own row.

    Learnable in a few epochs, so CLI/sweep/tune tests run in seconds. ``label_count``
    truncates the training labels to make a count-mismatch fixture.
    """
    from xpnet.data import write_idx

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, side, side)).astype(np.uint8)
        for i, lab in enumerate(labels):
            row = int(lab) * (side // 10) + 1
            images[i, row : row + 2, 3 : side - 3] = 250
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        count = label_count if (label_count and split == "train") else n
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels[:count])
    return folder


def run_cli(args, capsys):
    """Run ``xpnet ARGS`` in-process; returns ``(exit code, stdout, stderr)``."""
    from xpnet.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err
