#!/usr/bin/env bash
# One command for a GPU machine: GPU tests, then the CPU-vs-GPU bench with PyTorch eager and
# CUDA-graph peers, all written to one results folder (default $OUT if set, else bench/results/gpu-...).
# Data: Fashion-MNIST's four .gz files in $XPNET_DATA/fashion-mnist/ (default .data/fashion-mnist/,
# git-ignored, so it can travel with the tree).
set -uo pipefail
cd "$(dirname "$0")/.."
export XPNET_DATA=${XPNET_DATA:-$PWD/.data}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
out=${1:-${OUT:-bench/results/gpu-$(date +%Y-%m-%d)}}
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python -m xpnet info; } > "$out/device.txt" 2>&1
python -m pytest -q tests/test_ops_cuda.py tests/test_kernels_compile.py tests/test_gpu_parity.py -rs 2>&1 | tee "$out/gpu-tests.txt"
python -m xpnet bench --device cpu,gpu --hidden "10;256;512;1024" --batch-size 64,128,512,2048 --epochs 4 \
  --peers xpnet-eager,torch,torch-graph --out "$out" 2>&1 | tee "$out/bench-log.txt"
