"""bench/device_check.sh: its dry run passes on the CPU, and the GPU call it makes fits the device
tool's limits (one call: ≤ 9 minutes of stages, ≤ 8 files back, no early abort)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "device_check.sh"
PREP = REPO / "bench" / "device_prep.sh"

needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


@needs_bash
def test_dry_run_passes_on_the_cpu(tmp_path):
    pytest.importorskip("numba")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(out)], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["env.txt", "nvmath.txt", "selftest.json", "selftest.txt", "train.txt"]
    summary = proc.stdout[proc.stdout.index("device_check (dry run)"):]
    for stage in ("env", "nvmath", "cpu-selftest", "cpu-train"):
        assert re.search(rf"^{stage}\s+rc 0\s", summary, re.M), summary
    report = json.loads((out / "selftest.json").read_text(encoding="utf-8"))
    assert report["ok"] and report["device"] == "cpu" and report["quick"]
    assert "test accuracy" in (out / "train.txt").read_text(encoding="utf-8")
    assert sys.executable in (out / "env.txt").read_text(encoding="utf-8") or "Python 3" in (out / "env.txt").read_text(
        encoding="utf-8")


def _gpu_stages(text: str) -> list[tuple[str, int, str]]:
    """``(name, limit, file)`` of every ``stage`` call in the script."""
    stages = []
    for line in text.splitlines():
        m = re.match(r"\s*(?:\[ \"\$dry\" = 0 \] && )?stage ([\w-]+) (\d+) ([\w.]+)", line)
        if m:
            stages.append((m.group(1), int(m.group(2)), m.group(3)))
    return stages


def test_the_gpu_call_fits_one_device_call():
    text = SCRIPT.read_text(encoding="utf-8")
    assert not re.search(r"^\s*set -[a-z]*e", text, re.M) and "pytest -x" not in text and " -x " not in text
    stages = _gpu_stages(text)
    gpu = {name: (limit, file) for name, limit, file in stages if not name.startswith("cpu-")}  # cpu-*: dry run only
    assert list(gpu) == ["env", "nvmath", "tests", "selftest", "memcheck", "train", "bench"], stages
    assert sum(limit for limit, _ in gpu.values()) <= 9 * 60
    files = {file for _, file in gpu.values()} | {"selftest.json"}
    assert len(files) <= 8
    budget = int(re.search(r"budget=\$\{BUDGET:-(\d+)\}", text).group(1))
    assert budget <= 9 * 60 - 10
    for needle in ("--dry-run", "--no-deps --target", "compute-sanitizer --tool memcheck", "--device gpu --json",
                   "--peers xpnet-eager,torch,torch-graph", "--epochs 5", "timeout -k"):
        assert needle in text, needle


def test_bench_readme_documents_the_call():
    readme = (REPO / "bench" / "README.md").read_text(encoding="utf-8")
    assert 'run(command="bash bench/device_check.sh", carry=[".whl", ".data"], timeout_s=560)' in readme


@needs_bash
def test_prep_needs_a_data_dir(tmp_path):
    proc = subprocess.run(["bash", str(PREP)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --data-dir DIR")
    proc = subprocess.run(["bash", str(PREP), "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr
