#!/usr/bin/env bash
# The CPU benchmark (issues 3 and 19): xpnet (NumPy + Numba backend, its BLAS-thread policy) against
# xpnet on one thread, PyTorch CPU, JAX (whole step in one jax.jit) and scikit-learn, in one run,
# each case in its own process, on an idle machine and beside one busy program (--busy 0,1), two runs per
# case taken in turns across the implementations (the VM's speed drifts over minutes); a run that the
# two-core probe puts in one of the VM's slow phases is taken again, up to twice, and the fastest take counts
# (the set-aside takes are in results.json and under the table).
# Fashion-MNIST 60k, Adam lr 1e-3, batch 128, float32, shapes 784-10-10, 784-1024-10, 784-120-64-10.
# Usage: bench/run_cpu.sh [OUT_DIR]   (needs: pip install -e '.[bench]' torch)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/cpu-$(nproc)core-$(date -u +%Y-%m-%d)}
mkdir -p "$out"
uptime > "$out/load.txt"
python -m xpnet bench --device cpu --hidden 10 --hidden 1024 --hidden 120,64 --batch-size 128 --epochs 3 --repeats 2 --retake-slow 2 --case-timeout 240 \
  --peers xpnet-1thread,torch,jax,sklearn --busy 0,1 --out "$out" 2> >(tee "$out/log.txt" >&2)
uptime >> "$out/load.txt"
python -m xpnet info > "$out/info.txt"
