#!/usr/bin/env bash
# cxr-train's training and inference speed against PyTorch/torchvision on the same machine: the
# same models, input size, batch, thread count and step (forward, BCE, backward, Adam), candle and
# PyTorch run back to back for each model. Both report their fastest timed step (the machine may
# be shared) and the peak resident memory of each phase; ratios are candle / PyTorch (above 1:
# candle is faster, or for memory uses more). The PyTorch side runs only where `import torch`
# works.
#
# Usage: bench/train.sh   (MODELS, SIZE, BATCH, STEPS, WARMUP, THREADS override the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS=${MODELS:-"densenet121 resnet50"}
SIZE=${SIZE:-224}
BATCH=${BATCH:-8}
STEPS=${STEPS:-3}
WARMUP=${WARMUP:-1}
THREADS=${THREADS:-$(nproc)}
export RAYON_NUM_THREADS=$THREADS

# The whole workspace at once: a per-package build re-resolves features and rebuilds shared crates.
cargo build --release --quiet --workspace
BIN="${CARGO_TARGET_DIR:-target}/release/cxr-train"
ARGS=(--size "$SIZE" --batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP")

have_torch=0
python3 -c 'import torch, torchvision' 2>/dev/null && have_torch=1
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $THREADS threads; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for model in $MODELS; do
    ours=$("$BIN" bench --model "$model" "${ARGS[@]}" --json)
    theirs=null
    if [ "$have_torch" = 1 ]; then
        theirs=$(python3 bench/train_torch.py --model "$model" "${ARGS[@]}" --threads "$THREADS")
    fi
    python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def row(r):
    return (f"{r['framework']:<22} train {r['train']['images_per_s']:6.2f} img/s "
            f"{r['train']['peak_rss_mib']:7.0f} MiB | infer {r['infer']['images_per_s']:6.2f} img/s "
            f"{r['infer']['peak_rss_mib']:7.0f} MiB")
print(f"{ours['model']} {ours['size']}x{ours['size']} batch {ours['batch']}, {ours['threads']} threads")
print("  " + row(ours))
if theirs:
    print("  " + row(theirs))
    q = lambda phase, key: ours[phase][key] / theirs[phase][key]
    print(f"  {'candle / pytorch':<22} train {q('train', 'images_per_s'):6.2f}x       "
          f"{q('train', 'peak_rss_mib'):6.2f}x  | infer {q('infer', 'images_per_s'):6.2f}x       "
          f"{q('infer', 'peak_rss_mib'):6.2f}x")
PY
done
