#!/usr/bin/env bash
# The CPU benchmark of issue 3: xpnet (NumPy backend) vs PyTorch CPU and scikit-learn, same run,
# Fashion-MNIST 60k, Adam lr 1e-3, batch 128, float32, shapes 784-10-10, 784-1024-10, 784-120-64-10.
# Usage: bench/run_cpu.sh [OUT_DIR]   (needs: pip install -e '.[bench]' torch)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/cpu-$(hostname)-$(date +%Y-%m-%d)}
xpnet bench --device cpu --hidden "10;1024;120,64" --batch-size 128 --epochs 6 --repeats 2 \
  --peers torch,sklearn --out "$out"
xpnet info > "$out/info.txt"
