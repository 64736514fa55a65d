#!/usr/bin/env bash
# Builds the workspace with cxr-train's `cuda` feature on a machine with no GPU and no CUDA
# toolkit, so that the binary can be carried to a GPU machine that has no Rust. It can be run
# again at any time: a second run installs nothing and rebuilds only what changed.
#
# 1. nvcc from PyPI wheels (tools/cuda-toolkit.sh, shared with the CUDA lint of CI).
# 2. Link-only stubs: candle-core turns on cudarc's `dynamic-linking` (not its dlopen loading),
#    so the link asks for libcuda, libcublas, libcublasLt, libcurand, libnvrtc (and libcudnn).
#    Their wheels are hundreds of MB, and libcuda comes only with a driver; tiny libraries that
#    export every function cudarc declares, under the real sonames, link the same. The binary
#    then loads the real libraries where it runs (bench/gpu.sh finds PyTorch's copies).
#    libcudart, which candle-kernels links, is the real one from the runtime wheel.
# 3. cargo into target-cuda/ (ignored), apart from the CPU build in target/. Stripped, the
#    binary is still about 80 MiB (candle-kernels links machine code for its quantized and MoE
#    kernels, and the PTX of the rest), over the 64 MiB the device tool carries: it and the
#    three CPU tools go xz-packed into target-cuda/payload/ (about 24 MiB), which
#    tools/gpu-check.sh and bench/gpu.sh unpack on the GPU machine (`make gpu-payload`).
#
# Usage: tools/cuda-build.sh [cuda|cudnn]   (default cuda; cudnn adds cuDNN convolutions)
# CUDA_COMPUTE_CAP (default 90: H100 and H200) and CARGO_TARGET_DIR override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

FEATURE=${1:-cuda}
# cudarc's module for each library the binary links, and the library's soname in CUDA 13.
SONAMES="driver:libcuda.so.1 cublas:libcublas.so.13 cublaslt:libcublasLt.so.13 curand:libcurand.so.10 nvrtc:libnvrtc.so.13"
case "$FEATURE" in
cuda) ;;
cudnn) SONAMES="$SONAMES cudnn:libcudnn.so.9" ;;
*) echo "usage: $0 [cuda|cudnn]" >&2; exit 2 ;;
esac
# shellcheck source=tools/cuda-toolkit.sh
source tools/cuda-toolkit.sh

# 2. Stubs, from the cudarc sources cargo resolved (its bindings name every function it can call).
cudarc=$(cargo metadata --format-version 1 --locked --features "cxr-train/$FEATURE" |
    python3 -c 'import json, sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc").rsplit("/", 1)[0])')
stubs=$CUDA_ROOT/lib/stubs
rm -rf "$stubs" && mkdir -p "$stubs"
for entry in $SONAMES; do
    module=${entry%%:*} soname=${entry#*:}
    # Inside cudarc's `extern "C"` blocks (dynamic linking), each function is an indented `fn`.
    sed -nE 's/^\s+fn ([A-Za-z_][A-Za-z0-9_]*)\(.*/void \1(void) {}/p' "$cudarc/src/$module/sys/mod.rs" |
        sort -u >"$stubs/$module.c"
    [ -s "$stubs/$module.c" ] || { echo "no functions found in $cudarc/src/$module/sys/mod.rs" >&2; exit 1; }
    cc -shared -fPIC -w -Wl,-soname,"$soname" -o "$stubs/${soname%.so*}.so" "$stubs/$module.c"
done
ln -sf ../libcudart.so.13 "$stubs/libcudart.so"

# 3. The build; candle-kernels' nvcc pass alone takes minutes on two cores.
cargo build --release --workspace --features "cxr-train/$FEATURE"
# 4. The payload: every tool stripped and xz-packed, with the feature it was built with.
payload=$CARGO_TARGET_DIR/payload
rm -rf "$payload" && mkdir -p "$payload"
for tool in cxr-train cxr-index cxr-preprocess cxr-eval; do
    strip -o "$payload/$tool" "$CARGO_TARGET_DIR/release/$tool"
    xz -T0 -6 "$payload/$tool"
done
echo "$FEATURE sm_$CUDA_COMPUTE_CAP" >"$payload/FEATURE"
echo "cxr-train ($FEATURE, sm_$CUDA_COMPUTE_CAP) and the CPU tools packed in $payload:" \
    "$(du -sm "$payload" | cut -f1) MiB to carry (the device tool carries 64 MiB with the working tree)"
echo "on the GPU machine: tools/gpu-check.sh $payload"
