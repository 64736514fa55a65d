# Sourced by tools/cuda-build.sh and tools/cuda-lint.sh (not run alone): the CUDA 13.0 compiler
# from PyPI wheels, installed with `pip --target` into .cuda-toolkit/ (ignored), and the
# variables candle-kernels (nvcc, CUDA_COMPUTE_CAP) and cudarc (CUDA_ROOT, `nvcc --version`)
# read. Pinned to CUDA 13.0, the device machines' driver (580) and nvcc: the kernels are
# embedded as PTX that the driver compiles at start, and a newer nvcc writes a PTX version that
# driver refuses. A changed pin reinstalls from scratch (pip --target does not upgrade in place).
WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
TOOLKIT=$PWD/.cuda-toolkit
# 90: H100 and H200; candle-kernels then builds for sm_90a, which runs on compute capability
# 9.0 alone.
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# Apart from the CPU build in target/: switching features in one target folder would rebuild
# the workspace each time.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda}

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
