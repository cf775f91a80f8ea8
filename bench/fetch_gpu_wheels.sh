#!/usr/bin/env bash
# Wheels the GPU machine (no network) needs beyond its CuPy/PyTorch: nvmath-python (cuBLAS inside the
# CUDA-graph capture) and its dependencies, for one Python version, into the git-ignored .whl/ folder
# that the device tool carries (about 15 MB).   Usage: bash bench/fetch_gpu_wheels.sh [3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-3.12}
python -m pip download -q --only-binary=:all: --python-version "$py" --platform manylinux_2_28_x86_64 \
  --no-deps -d .whl nvmath-python cuda-bindings cuda-core cuda-pathfinder
ls -la .whl
