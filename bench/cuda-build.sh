#!/usr/bin/env bash
# Builds the workspace with cxr-train's `cuda` feature on a machine with no GPU and no CUDA
# toolkit, so that the binary can be carried to a GPU machine that has no Rust. It can be run
# again at any time: a second run installs nothing and rebuilds only what changed.
#
# 1. nvcc from PyPI wheels, installed with `pip --target` into .cuda-toolkit/ (ignored):
#    candle-kernels compiles its .cu files with it, and cudarc reads the CUDA version from
#    `nvcc --version`. Pinned to CUDA 13.0, the device machines' driver (580) and nvcc: the
#    kernels are embedded as PTX that the driver compiles at start, and a newer nvcc writes a
#    PTX version that driver refuses.
# 2. Link-only stubs: candle-core turns on cudarc's `dynamic-linking` (not its dlopen loading),
#    so the link asks for libcuda, libcublas, libcublasLt, libcurand, libnvrtc (and libcudnn).
#    Their wheels are hundreds of MB, and libcuda comes only with a driver; tiny libraries that
#    export every function cudarc declares, under the real sonames, link the same. The binary
#    then loads the real libraries where it runs (bench/gpu.sh finds PyTorch's copies).
#    libcudart, which candle-kernels links, is the real one from the runtime wheel.
# 3. cargo into target-cuda/ (ignored), apart from the CPU build in target/: switching features
#    in one target folder would rebuild the workspace each time. Stripped, the binary is still
#    about 80 MiB (candle-kernels links machine code for its quantized and MoE kernels, and the
#    PTX of the rest), over the 64 MiB the device tool carries: target-cuda/cxr-train-FEATURE.xz
#    (about 11 MiB) is the copy to carry, and bench/gpu.sh unpacks it.
#
# Usage: bench/cuda-build.sh [cuda|cudnn]   (default cuda; cudnn adds cuDNN convolutions)
# CUDA_COMPUTE_CAP (default 90: H100 and H200; candle-kernels then builds for sm_90a, which runs
# on compute capability 9.0 alone) and CARGO_TARGET_DIR override the defaults.
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
WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
TOOLKIT=$PWD/.cuda-toolkit
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda}

# 1. The compiler. A changed pin reinstalls from scratch: pip --target does not upgrade in place.
if [ "$(cat "$TOOLKIT/wheels" 2>/dev/null)" != "${WHEELS[*]}" ]; then
    echo "installing nvcc (CUDA 13.0 wheels, about 130 MB) into $TOOLKIT..." >&2
    rm -rf "$TOOLKIT"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
        --target "$TOOLKIT/site" "${WHEELS[@]}"
    echo "${WHEELS[*]}" >"$TOOLKIT/wheels"
fi
export CUDA_ROOT=$TOOLKIT/site/nvidia/cu13 # cudarc's link search: $CUDA_ROOT/lib and lib/stubs
export CUDA_HOME=$CUDA_ROOT
export PATH=$CUDA_ROOT/bin:$PATH
export NVCC=$CUDA_ROOT/bin/nvcc
unset CUDA_PATH CUDA_TOOLKIT_ROOT_DIR CUDNN_LIB # would replace CUDA_ROOT in cudarc's search
"$NVCC" --version | grep -q 'release 13\.0' || {
    echo "$NVCC is not CUDA 13.0: remove $TOOLKIT and run again" >&2
    exit 1
}

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
bin=$CARGO_TARGET_DIR/release/cxr-train
strip "$bin"
xz -T0 -6 -c "$bin" >"$CARGO_TARGET_DIR/cxr-train-$FEATURE.xz"
echo "$bin ($FEATURE, sm_$CUDA_COMPUTE_CAP): $(du -m "$bin" | cut -f1) MiB"
echo "to carry: $CARGO_TARGET_DIR/cxr-train-$FEATURE.xz ($(du -m "$CARGO_TARGET_DIR/cxr-train-$FEATURE.xz" | cut -f1) MiB);" \
    "on the GPU machine: bench/gpu.sh $CARGO_TARGET_DIR/cxr-train-$FEATURE.xz"
