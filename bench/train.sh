#!/usr/bin/env bash
# cxr-train's training and inference speed against PyTorch/torchvision on the same machine: the
# same models, input size, batch, thread count and step (forward, BCE, backward, Adam), candle and
# PyTorch run back to back for each model. Both report their fastest timed step (the machine may
# be shared) and the peak resident memory of each phase; ratios are candle / PyTorch (above 1:
# candle is faster, or for memory uses more), the median over ROUNDS alternating runs, and the
# ratio of each side's fastest run. The PyTorch side runs only where `import torch` works.
#
# Usage: bench/train.sh   (MODELS, SIZE, BATCH, STEPS, WARMUP, THREADS, ROUNDS override the
# defaults)
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS=${MODELS:-"densenet121 resnet50"}
SIZE=${SIZE:-224}
BATCH=${BATCH:-8}
STEPS=${STEPS:-3}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-$(nproc)}

# The whole workspace at once: a per-package build re-resolves features and rebuilds shared crates.
cargo build --release --quiet --workspace
BIN="${CARGO_TARGET_DIR:-target}/release/cxr-train"
ARGS=(--size "$SIZE" --batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS")

have_torch=0
python3 -c 'import torch, torchvision' 2>/dev/null && have_torch=1
avx512=$(grep -o 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $THREADS threads; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "AVX-512: ${avx512:-none}; kernels: ${CXR_SIMD:-widest available} (CXR_SIMD)"
if [ "$have_torch" = 1 ]; then
    echo "peak: $(python3 bench/peak.py "$THREADS") GFLOP/s (a 2048^3 f32 product in PyTorch, $THREADS threads)"
fi
for model in $MODELS; do
    # Alternate the two, ROUNDS times: this machine's speed drifts by 10-20% from minute to
    # minute, so a ratio is only meaningful between runs next to each other.
    runs=()
    for _ in $(seq "$ROUNDS"); do
        ours=$("$BIN" bench --model "$model" "${ARGS[@]}" --json)
        theirs=null
        if [ "$have_torch" = 1 ]; then
            theirs=$(python3 bench/train_torch.py --model "$model" "${ARGS[@]}")
        fi
        runs+=("[$ours, $theirs]")
    done
    python3 bench/train_report.py "${runs[@]}"
done
