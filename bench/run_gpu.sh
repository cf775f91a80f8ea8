#!/usr/bin/env bash
# One command for a GPU machine: GPU tests, the issue's target case, then the CPU-vs-GPU sweep
# with PyTorch eager and CUDA-graph peers, all written to one results folder (default $OUT if
# set, else bench/results/gpu-<date>). Each step writes its own files, so a run cut short by a
# time limit still brings back what finished.
# Data: Fashion-MNIST's four .gz files in $XPNET_DATA/fashion-mnist/ (default .data/fashion-mnist/,
# git-ignored, so it can travel with the tree).
# Through the device tool (at most 8 files come back from $OUT): bash bench/run_gpu.sh /tmp/gpu;
# tar czf $OUT/gpu.tgz -C /tmp gpu
set -uo pipefail
cd "$(dirname "$0")/.."
export XPNET_DATA=${XPNET_DATA:-$PWD/.data}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
out=${1:-${OUT:-bench/results/gpu-$(date +%Y-%m-%d)}}
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python -m xpnet info; } > "$out/device.txt" 2>&1
# The emulated variants already run in CI; here only what needs the GPU.
python -m pytest -q -rs -k "not emulated" tests/test_ops_cuda.py tests/test_kernels_compile.py tests/test_gpu_parity.py \
  tests/test_train_graph.py tests/test_cuda_toolchain.py 2>&1 | tee "$out/gpu-tests.txt"
# The target: 784-1024-10, batch 128, Adam, float32 (<= 15 ms/epoch on an H100, >= 5x torch eager,
# no slower than torch-graph, >= 50x xpnet CPU).
python -m xpnet bench --device cpu,gpu --hidden 1024 --batch-size 128 --epochs 6 --repeats 2 \
  --peers xpnet-eager,torch,torch-graph --out "$out/target" 2>&1 | tee "$out/target-log.txt"
# Where the GPU pays and where it stops paying (784-10-10 at small batches).
python -m xpnet bench --device cpu,gpu --hidden "10;256;512;1024" --batch-size 64,128,512,2048 --epochs 4 \
  --peers xpnet-eager,torch,torch-graph --out "$out/sweep" 2>&1 | tee "$out/sweep-log.txt"
