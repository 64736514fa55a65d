#!/usr/bin/env bash
# cxr-train's training and inference speed on a GPU against PyTorch/torchvision on the same GPU,
# as bench/train.sh does on the CPU: same models, input size, batch and step, alternating runs,
# ratios candle / PyTorch (bench/train_report.py prints them; memory there is the host's).
#
# Run it ON the GPU machine, which has python3 with a CUDA PyTorch but no Rust: build the binary
# here with `make cuda` (tools/cuda-build.sh) and carry it there, as target-cuda/cxr-train-cuda.xz
# (the binary itself is over the 64 MiB the device tool carries); an .xz is unpacked first. The
# binary was linked against stubs, so it loads the real CUDA 13 libraries at start: cuBLAS,
# cuRAND, the runtime (and cuDNN) from PyTorch's nvidia wheels, libcuda from the driver.
#
# Each round runs cxr-train and PyTorch eager in f32 (NCHW, TF32 convolutions as both allow by
# default), then, as people train on GPUs today, cxr-train --precision bf16 and PyTorch with
# channels_last and bf16 autocast (AMP=0 skips the second pair).
#
# Usage: bench/gpu.sh [BINARY]   (default target-cuda/payload/cxr-train.xz, as `make gpu-payload`
# packs it; MODELS, SIZE, BATCH, STEPS, WARMUP, ROUNDS, DEVICE, AMP override the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-target-cuda/payload/cxr-train.xz}
MODELS=${MODELS:-"densenet121 resnet50"}
SIZE=${SIZE:-224}
BATCH=${BATCH:-64}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
DEVICE=${DEVICE:-cuda:0}
# bf16 is CUDA's: the CPU refuses it, so a rehearsal there skips that pair.
AMP=${AMP:-$([ "$DEVICE" = cpu ] && echo 0 || echo 1)}
RUN_LIMIT=${RUN_LIMIT:-150}

if [ ! -f "$BIN" ]; then
    echo "no binary at $BIN: build it with \`make gpu-payload\` and carry target-cuda/payload" >&2
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
# CUDA 12 wheels keep their libraries in nvidia/NAME/lib, CUDA 13's in nvidia/cu13/lib.
libs=$(find "$site/nvidia" -mindepth 2 -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd: || true)
[ -n "$libs" ] || echo "no nvidia/*/lib under $site: CUDA's libraries must then be on the system" >&2
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
    runs=() amp_runs=()
    for _ in $(seq "$ROUNDS"); do
        # A failing side is reported and left out of the ratios; the other still runs.
        ours=$(timeout "$RUN_LIMIT" "$BIN" bench --model "$model" "${ARGS[@]}" --json) || { echo "cxr-train bench failed" >&2; ours=null; }
        theirs=$(timeout "$RUN_LIMIT" python3 bench/train_torch.py --model "$model" "${ARGS[@]}") || theirs=null
        runs+=("[$ours, $theirs]")
        if [ "$AMP" = 1 ]; then
            ours=$(timeout "$RUN_LIMIT" "$BIN" bench --model "$model" "${ARGS[@]}" --precision bf16 --json) || ours=null
            amp=$(timeout "$RUN_LIMIT" python3 bench/train_torch.py --model "$model" "${ARGS[@]}" --channels-last --bf16) || amp=null
            amp_runs+=("[$ours, $amp]")
        fi
    done
    python3 bench/train_report.py "${runs[@]}"
    if [ "$AMP" = 1 ]; then python3 bench/train_report.py "${amp_runs[@]}"; fi
done
