#!/usr/bin/env bash
# The one prepared device check: what the first GPU minutes must settle, in ONE device call on a
# bare H200 (python3 holds PyTorch and CuPy 14 for CUDA 13; no nvmath-python: carried as wheels).
#
#   bash bench/device_prep.sh --data-dir DIR          # first, on a machine without a GPU
#   run(command="bash bench/device_check.sh", carry=[".whl", ".data"], timeout_s=560)
#   bash bench/device_check.sh --dry-run OUT          # the stages that need no GPU, on the CPU (CI)
#
# Stages, each under its own `timeout` and a shared deadline (BUDGET seconds in all, default 525),
# none aborting the next (no `set -e`), each writing one file to OUT ($OUT, else the argument,
# else /tmp/device-check): 8 files, the most the device tool brings back.
#   1 env.txt        nvidia-smi, python3 -VV, pip list (GPU stack), numerics variables
#   2 nvmath.txt     nvmath import ladder: .whl/ installed with --no-deps --target /tmp/site-N,
#                    {nvmath} → {+cuda-core, cuda-pathfinder} → {+cuda-bindings}; the first set whose
#                    `import nvmath.bindings.cublas; create()` works is used (PYTHONPATH) from then on
#   3 tests.txt      the GPU tests (no emulator, no CPU twins), no -x, a per-test timeout
#   4 selftest.txt   python3 -m xpnet selftest --device gpu --json OUT/selftest.json (+ selftest.json)
#   5 memcheck.txt   compute-sanitizer --tool memcheck over selftest --quick, CuPy's memory pool off
#   6 train.txt      python3 -m xpnet train --device gpu on MNIST (.data/mnist), 5 epochs
#   7 bench.txt      python3 -m xpnet bench, 784-1024-10 batch 128: xpnet graph, xpnet-eager, torch, torch-graph
# The dry run does 1, 2 (lists the wheels, installs nothing), 4 on the CPU (--quick) and 6 as a tiny
# CPU run on generated data. Exit status: 1 when any stage failed or was cut, else 0.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
out=${OUT:-${1:-/tmp/device-check}}
[ "$dry" = 1 ] && [ -n "${1:-}" ] && out=$1
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
budget=${BUDGET:-525}
export dry out py
summary=""
failed=0

# stage NAME LIMIT FILE CMD...: run CMD under `timeout`, capped by what is left of the budget.
stage() {
  local name=$1 limit=$2 file=$3
  shift 3
  local left=$((budget - SECONDS - 5))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "skipped: out of time (budget ${budget}s)" >"$out/$file"
    summary+=$(printf '%-10s skipped (out of time)' "$name")$'\n'
    failed=1
    return
  fi
  local t0=$SECONDS rc
  echo "== $name (limit ${limit}s): $*" | tee -a "$out/$file"
  # bash -c with this script's functions: a stage may be a function (timeout runs programs only).
  timeout -k 10 "$limit" bash -c "$(declare -f); \"\$@\"" stage "$@" >>"$out/$file" 2>&1
  rc=$?
  local note="rc $rc"
  [ "$rc" = 0 ] || failed=1
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && note="TIMED OUT after ${limit}s"
  summary+=$(printf '%-10s %-22s %4ss  -> %s' "$name" "$note" $((SECONDS - t0)) "$file")$'\n'
  tail -n 3 "$out/$file"
}

# ---- 1 env --------------------------------------------------------------------------------
env_report() {
  date -u
  uname -a
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1 ||
    echo "nvidia-smi: not available"
  "$py" -VV
  command -v python >/dev/null && echo "python: $(command -v python)" || echo "python: not on PATH (use python3)"
  command -v compute-sanitizer >/dev/null && echo "compute-sanitizer: $(command -v compute-sanitizer)" ||
    echo "compute-sanitizer: not on PATH"
  "$py" -m pip list 2>/dev/null | grep -Ei '^(cupy|cuda|nvidia-(cublas|cuda-nvrtc|cuda-runtime)|nvmath|numpy|numba|torch |pytest|click|tqdm)' ||
    true
  env | grep -E '^(CUPY_|CUBLAS_|CUDA_|NVIDIA_TF32|TORCH_|NUMBA_|OMP_|XPNET_)' || echo "no numerics variables set"
  ls -la .whl .data/mnist 2>&1 || echo "(nothing carried: run bench/device_prep.sh)"
}
stage env 15 env.txt env_report

# ---- 2 nvmath ladder ------------------------------------------------------------------------
nvmath_ladder() {
  local probe='import cupy, nvmath
from nvmath.bindings import cublas
h = cublas.create(); cublas.destroy(h)
print("cupy", cupy.__version__, "nvmath", nvmath.__version__, "sum", int(cupy.arange(10).sum()))'
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "no wheels in .whl/ (run bench/device_prep.sh first): the graph path will be unavailable"
    [ "$dry" = 1 ]  # not a failure of the dry run (CI has no wheels)
    return
  fi
  ls -l .whl
  if [ "$dry" = 1 ]; then
    echo "dry run: nothing installed"
    return 0
  fi
  local i=0 set
  for set in "nvmath_python" "nvmath_python cuda_core cuda_pathfinder" "nvmath_python cuda_core cuda_pathfinder cuda_bindings"; do
    i=$((i + 1))
    local files=()
    for w in $set; do files+=(.whl/"$w"-*.whl); done
    echo "-- rung $i: ${set}"
    rm -rf "/tmp/site-$i"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "/tmp/site-$i" "${files[@]}" || continue
    if PYTHONPATH="/tmp/site-$i" "$py" -W always -c "$probe"; then
      echo "/tmp/site-$i" >/tmp/nvmath-site
      echo "-- using rung $i"
      PYTHONPATH="/tmp/site-$i" "$py" -m xpnet info
      return 0
    fi
  done
  echo "-- no rung imports nvmath's cuBLAS: the graph path stays unavailable (see the errors above)"
  "$py" -m xpnet info
  return 1
}
rm -f /tmp/nvmath-site
stage nvmath 45 nvmath.txt nvmath_ladder
if [ -s /tmp/nvmath-site ]; then
  export PYTHONPATH=$(cat /tmp/nvmath-site)${PYTHONPATH:+:$PYTHONPATH}
fi

# ---- 3 GPU tests ------------------------------------------------------------------------------
gpu_tests() {
  local per_test=()
  "$py" -c "import pytest_timeout" 2>/dev/null && per_test=(--timeout 90) || echo "(pytest-timeout absent: the stage timeout alone)"
  "$py" -m pytest -q -rs -p no:cacheprovider "${per_test[@]}" \
    -k "not emulated and not reference and not [cpu" \
    tests/test_ops.py tests/test_ops_cuda.py tests/test_train_graph.py tests/test_gpu_parity.py tests/test_cuda_toolchain.py
}
[ "$dry" = 0 ] && stage tests 150 tests.txt gpu_tests

# ---- 4 selftest -------------------------------------------------------------------------------
if [ "$dry" = 1 ]; then
  stage cpu-selftest 240 selftest.txt "$py" -m xpnet selftest --device cpu --quick --json "$out/selftest.json"
else
  stage selftest 100 selftest.txt "$py" -m xpnet selftest --device gpu --json "$out/selftest.json"
fi

# ---- 5 compute-sanitizer memcheck -----------------------------------------------------------
if [ "$dry" = 0 ]; then
  # CuPy's memory pool hands out pieces of larger blocks, where memcheck sees no boundary: plain
  # cudaMalloc per array instead (set_allocator(None)), so an access past an array's end is caught.
  stage memcheck 90 memcheck.txt compute-sanitizer --tool memcheck --error-exitcode 9 --target-processes all \
    "$py" -c 'import sys, cupy; cupy.cuda.set_allocator(None); from xpnet.cli import main
sys.exit(main(["selftest", "--device", "gpu", "--quick"]))'
fi

# ---- 6 train ------------------------------------------------------------------------------------
if [ "$dry" = 1 ]; then
  tiny_data=$(mktemp -d)
  "$py" - "$tiny_data" <<'PY'
import sys
from pathlib import Path

import numpy as np

from xpnet.data import write_idx

folder, rng = Path(sys.argv[1]), np.random.default_rng(0)
for split, n in (("train", 600), ("t10k", 100)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):  # a bright bar per class: learnable in seconds
        images[i, 2 * label + 3: 2 * label + 5, 3:25] = 250
    write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
    write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
PY
  stage cpu-train 120 train.txt "$py" -m xpnet train --device cpu --data-dir "$tiny_data" --hidden 32 --epochs 2 \
    --out "$tiny_data/model.npz"
  rm -rf "$tiny_data"
else
  stage train 60 train.txt "$py" -m xpnet train --device gpu --dataset mnist --data-dir .data/mnist --epochs 5 \
    --out /tmp/device-check-model.npz
fi

# ---- 7 bench ------------------------------------------------------------------------------------
if [ "$dry" = 0 ]; then
  stage bench 80 bench.txt "$py" -m xpnet bench --device gpu --dataset mnist --data-dir .data/mnist --hidden 1024 \
    --batch-size 128 --epochs 4 --peers xpnet-eager,torch,torch-graph
fi

echo
echo "device_check ($([ "$dry" = 1 ] && echo dry run || echo GPU)), ${SECONDS}s of a ${budget}s budget; files in $out:"
printf '%s' "$summary"
ls "$out"
exit "$failed"
