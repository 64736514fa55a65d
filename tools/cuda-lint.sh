#!/usr/bin/env bash
# Keeps the GPU build from rotting where no GPU is (CI runs it): type-checks and lints the whole
# workspace, tests included, with cxr-train's `cuda` and then its `cudnn` feature, warnings as
# errors. Needs no GPU and no CUDA install: nvcc comes from PyPI (tools/cuda-toolkit.sh), as for
# tools/cuda-build.sh; candle-kernels still compiles its .cu files to PTX (a check runs build
# scripts), which is most of a cold run's time. Nothing is linked, so no stubs are needed.
#
# Usage: tools/cuda-lint.sh   (make cuda-lint; CARGO_TARGET_DIR defaults to target-cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/cuda-toolkit.sh
source tools/cuda-toolkit.sh

for feature in cuda cudnn; do
    echo "clippy with cxr-train/$feature" >&2
    start=$SECONDS
    cargo clippy --locked --workspace --all-targets --features "cxr-train/$feature" -- -D warnings
    echo "clippy with cxr-train/$feature: clean in $((SECONDS - start)) s" >&2
done
