"""Every kernels/*.cu compiles with nvcc and defines the entry points ops/cuda.py launches.

No GPU needed (PTX only). NVRTC, which CuPy uses at run time, accepts the same C++ subset as
long as the files stay self-contained (checked in test_ops_cuda.py). About 1-2 s per file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from xpnet.ops.cuda import KERNEL_NAMES, NVRTC_OPTIONS

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
NVCC = shutil.which("nvcc")

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")


def _ptx(cu: Path, out_dir: Path) -> str:
    out = out_dir / (cu.stem + ".ptx")
    cmd = [NVCC, "--ptx", "-arch=sm_80", *NVRTC_OPTIONS, "-Werror", "all-warnings", "-o", str(out), str(cu)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def ptx(tmp_path_factory):
    """PTX of every kernel file, compiled in parallel once for the module."""
    out_dir = tmp_path_factory.mktemp("ptx")
    files = sorted(KERNELS.glob("*.cu"))
    with ThreadPoolExecutor(max_workers=len(files) or 1) as pool:
        texts = pool.map(lambda cu: _ptx(cu, out_dir), files)
    return dict(zip((f.name for f in files), texts))


def test_every_file_is_known_to_the_wrappers(ptx):
    assert sorted(ptx) == sorted(KERNEL_NAMES)


@pytest.mark.parametrize("filename", sorted(KERNEL_NAMES))
def test_entry_points(ptx, filename):
    entries = set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx[filename]))
    missing = set(KERNEL_NAMES[filename]) - entries
    assert not missing, f"{filename}: kernels {sorted(missing)} not in PTX (found {sorted(entries)})"
