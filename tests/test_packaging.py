"""The wheel ships the CUDA sources: kernels/*.cu land in xpnet/_cuda_src/ (pyproject's
package-dir mapping), where ops/cuda.py finds them with importlib.resources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_cuda_sources(tmp_path):
    pytest.importorskip("setuptools")
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout,
    # and a stale build/lib can hide a file missing from the mapping.
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    for name in ("xpnet", "kernels"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    out = tmp_path / "wheel"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = out.glob("xpnet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"xpnet/_cuda_src/{p.name}" for p in REPO.glob("kernels/*.cu")}
    assert expected, "no kernels/*.cu found"
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert "xpnet/_cuda_src/__init__.py" in names
    assert "xpnet/ops/cuda.py" in names

    # Installed (unpacked) wheel: ops/cuda.py reads the sources through importlib.resources.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import xpnet.ops.cuda as c, pathlib\n"
        f"assert pathlib.Path(c.__file__).is_relative_to({str(site)!r}), c.__file__\n"
        "for name in c.KERNEL_NAMES: assert '__global__' in c.kernel_source(name)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
