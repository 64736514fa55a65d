#!/usr/bin/env bash
# cxr-train's training and inference speed on a GPU against PyTorch/torchvision on the same GPU,
# as bench/train.sh does on the CPU: same models, input size, batch and step, alternating runs,
# ratios candle / PyTorch (bench/train_report.py prints them; memory there is the host's).
#
# Run it ON the GPU machine, which has python3 with a CUDA PyTorch but no Rust: build the binary
# here with `make cuda` (bench/cuda-build.sh) and carry it there, as target-cuda/cxr-train-cuda.xz
# (the binary itself is over the 64 MiB the device tool carries); an .xz is unpacked first. The
# binary was linked against stubs, so it loads the real CUDA 13 libraries at start: cuBLAS,
# cuRAND, the runtime (and cuDNN) from PyTorch's nvidia wheels, libcuda from the driver.
#
# Usage: bench/gpu.sh [BINARY]   (default target-cuda/cxr-train-cuda.xz; MODELS, SIZE, BATCH,
# STEPS, WARMUP, ROUNDS, DEVICE override the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-target-cuda/cxr-train-cuda.xz}
MODELS=${MODELS:-"densenet121 resnet50"}
SIZE=${SIZE:-224}
BATCH=${BATCH:-64}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
DEVICE=${DEVICE:-cuda:0}

if [ ! -f "$BIN" ]; then
    echo "no binary at $BIN: build it with \`make cuda\` and carry target-cuda/cxr-train-cuda.xz" >&2
    exit 1
fi
if [[ $BIN == *.xz ]]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    unpacked=$tmp/cxr-train
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$BIN" "$unpacked"
    chmod +x "$unpacked"
    BIN=$unpacked
fi
site=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))') || {
    echo "python3 cannot import torch: run this where PyTorch with CUDA is installed" >&2
    exit 1
}
libs=$(find "$site/nvidia" -mindepth 2 -maxdepth 2 -type d -name lib 2>/dev/null | paste -sd:)
[ -d /usr/local/nvidia/lib64 ] && libs=$libs:/usr/local/nvidia/lib64 # the driver's libcuda
export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if missing=$(ldd "$BIN" | grep 'not found'); then
    echo "$BIN needs libraries found neither in $site/nvidia/*/lib nor on the system:" >&2
    echo "$missing" >&2
    exit 1
fi

ARGS=(--size "$SIZE" --batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --device "$DEVICE")
echo "machine: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader -i "${DEVICE#cuda:}" 2>/dev/null || echo "$DEVICE"); $(python3 -c 'import torch; print("torch", torch.__version__)')"
for model in $MODELS; do
    runs=()
    for _ in $(seq "$ROUNDS"); do
        ours=$("$BIN" bench --model "$model" "${ARGS[@]}" --json)
        theirs=$(python3 bench/train_torch.py --model "$model" "${ARGS[@]}")
        runs+=("[$ours, $theirs]")
    done
    python3 bench/train_report.py "${runs[@]}"
done
