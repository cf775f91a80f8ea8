#!/usr/bin/env bash
# Prepares bench/device_check.sh on a machine WITHOUT a GPU (no device time): the wheels the device
# image lacks and MNIST, into the git-ignored folders the device call carries.
#
#   bash bench/device_prep.sh --data-dir DIR [--python 3.12]
#
# .whl/        nvmath-python (cuBLAS inside the CUDA-graph capture) and what it may need beyond the
#              image's own copies: cuda-core, cuda-pathfinder, cuda-bindings; one version each, for
#              the device's Python (3.12) on x86-64 manylinux. device_check.sh tries them as a ladder.
# .data/mnist/ the four MNIST .gz files from DIR.
# Then: run(command="bash bench/device_check.sh", carry=[".whl", ".data"], timeout_s=560)  (bench/README.md)
set -uo pipefail
cd "$(dirname "$0")/.."
data_dir="" py="3.12"
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) data_dir=${2:-}; shift 2 ;;
    --python) py=${2:-}; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (usage: bash bench/device_prep.sh --data-dir DIR [--python 3.12])" >&2; exit 2 ;;
  esac
done
[ -n "$data_dir" ] || { echo "error: --data-dir DIR (a folder with MNIST's four .gz files) is required" >&2; exit 2; }
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
for f in $files; do
  [ -f "$data_dir/$f" ] || { echo "error: $data_dir/$f not found (need MNIST's four .gz files)" >&2; exit 2; }
done
mkdir -p .data/mnist
for f in $files; do install -m 0644 "$data_dir/$f" .data/mnist/; done

# The versions checked against the device image (the GPU review notes, §1A #1): nvmath-python 1.0.0
# needs cuda-core >= 0.5 and cuda-pathfinder >= 1.5.1, newer than the image's may be.
wheels="nvmath-python==1.0.0 cuda-core==1.2.2 cuda-pathfinder==1.9.1 cuda-bindings==13.5.0"
rm -rf .whl && mkdir -p .whl
platforms=""
for n in 39 35 34 31 28 27 24 17; do platforms="$platforms --platform manylinux_2_${n}_x86_64"; done
# shellcheck disable=SC2086
if ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    $platforms --platform manylinux2014_x86_64 -d .whl $wheels; then
  echo "error: pip could not fetch $wheels for Python $py" >&2
  exit 1
fi
ls -l .whl .data/mnist
total=$(du -sbc .whl .data | tail -1 | cut -f1)
echo "carried: $((total / 1048576)) MiB in .whl + .data (limit for the device call: 60 MiB with the tree)"
if [ "$total" -gt $((56 * 1048576)) ]; then
  echo "error: .whl + .data exceed 56 MiB: the working tree would not fit the device call" >&2
  exit 1
fi
