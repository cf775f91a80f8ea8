#!/usr/bin/env bash
# The GPU runs of the GPU issue, in steps that each end well inside the device tool's 10-minute call:
#   bash bench/run_gpu.sh OUT probe    # device info, GPU tests, bench/gpu_probe.py, the target case vs torch  (~5 min)
#   bash bench/run_gpu.sh OUT target   # 784-1024-10 batch 128: xpnet graph / eager vs torch / torch-graph, 3 repeats (~4 min)
#   bash bench/run_gpu.sh OUT sweep    # CPU vs GPU for hidden 10/256/512/1024 x batch 64/128/512/2048 (~8 min)
# Each step writes its own files under OUT (a run cut short still brings back what finished); bring them
# back with: tar czf $OUT/gpu.tgz -C /tmp gpu   (the tool returns at most 8 files).
# Carry (git-ignored): .data/ with fashion-mnist/ (Debian's four .gz) and mnist/ (../shared/data/mnist), and
# .whl/ with nvmath-python + cuda-bindings + cuda-core + cuda-pathfinder wheels for the device's Python
# (bash bench/fetch_gpu_wheels.sh 3.12): without nvmath-python the CUDA graph falls back to the eager loop.
set -uo pipefail
cd "$(dirname "$0")/.."
export XPNET_DATA=${XPNET_DATA:-$PWD/.data}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
out=${1:?usage: run_gpu.sh OUT probe|target|sweep}
step=${2:?usage: run_gpu.sh OUT probe|target|sweep}
mkdir -p "$out"
if ! python -c "import nvmath.bindings.cublas" 2>/dev/null && [ -d .whl ]; then
  python -m pip install -q --no-index --find-links .whl nvmath-python 2>&1 | tail -1
fi
case "$step" in
  probe)
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python -m xpnet info; } > "$out/device.txt" 2>&1
    # The emulated variants already run in CI; here only what needs the GPU.
    timeout 240 python -m pytest -q -rs -x -k "not emulated" tests/test_ops.py tests/test_ops_cuda.py \
      tests/test_gpu_parity.py tests/test_train_graph.py tests/test_cuda_toolchain.py 2>&1 | tee "$out/gpu-tests.txt"
    timeout 150 python bench/gpu_probe.py --out "$out" 2>&1 | tee "$out/probe-log.txt"
    ;;
  target)
    # <= 15 ms/epoch on an H100, <= 0.2x torch eager, <= 1.0x torch-graph, >= 50x xpnet CPU.
    timeout 500 python -m xpnet bench --device cpu,gpu --hidden 1024 --batch-size 128 --epochs 5 --repeats 3 \
      --peers xpnet-eager,torch,torch-graph --out "$out/target" 2>&1 | tee "$out/target-log.txt"
    ;;
  sweep)
    timeout 540 python -m xpnet bench --device cpu,gpu --hidden "10;256;512;1024" --batch-size 64,128,512,2048 \
      --epochs 3 --peers xpnet-eager,torch-graph --out "$out/sweep" 2>&1 | tee "$out/sweep-log.txt"
    ;;
  *) echo "unknown step $step: probe, target or sweep" >&2; exit 2 ;;
esac
