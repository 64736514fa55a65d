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
export RAYON_NUM_THREADS=$THREADS

# The whole workspace at once: a per-package build re-resolves features and rebuilds shared crates.
cargo build --release --quiet --workspace
BIN="${CARGO_TARGET_DIR:-target}/release/cxr-train"
ARGS=(--size "$SIZE" --batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP")

have_torch=0
python3 -c 'import torch, torchvision' 2>/dev/null && have_torch=1
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $THREADS threads; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for model in $MODELS; do
    # Alternate the two, ROUNDS times: this machine's speed drifts by 10-20% from minute to
    # minute, so a ratio is only meaningful between runs next to each other.
    runs=()
    for _ in $(seq "$ROUNDS"); do
        ours=$("$BIN" bench --model "$model" "${ARGS[@]}" --json)
        theirs=null
        if [ "$have_torch" = 1 ]; then
            theirs=$(python3 bench/train_torch.py --model "$model" "${ARGS[@]}" --threads "$THREADS")
        fi
        runs+=("[$ours, $theirs]")
    done
    python3 - "${runs[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(r) for r in sys.argv[1:]]
def row(r):
    return (f"{r['framework']:<22} train {r['train']['images_per_s']:6.2f} img/s "
            f"{r['train']['peak_rss_mib']:7.0f} MiB | infer {r['infer']['images_per_s']:6.2f} img/s "
            f"{r['infer']['peak_rss_mib']:7.0f} MiB")
first = runs[0][0]
print(f"{first['model']} {first['size']}x{first['size']} batch {first['batch']}, "
      f"{first['threads']} threads, {len(runs)} rounds")
for i, (ours, theirs) in enumerate(runs, 1):
    print(f"  round {i}: " + row(ours))
    if theirs:
        print(f"  round {i}: " + row(theirs))
if all(theirs for _, theirs in runs):
    def ratio(phase, key):
        r = sorted(o[phase][key] / t[phase][key] for o, t in runs)
        spread = f" ({r[0]:.2f}-{r[-1]:.2f})" if len(r) > 1 else ""
        return f"{statistics.median(r):5.2f}x{spread:<12}"
    print(f"  {'candle / pytorch, median of rounds (range)':<44} train {ratio('train', 'images_per_s')}"
          f" memory {ratio('train', 'peak_rss_mib')} | infer {ratio('infer', 'images_per_s')}"
          f" memory {ratio('infer', 'peak_rss_mib')}")
    # The machine's noise only ever slows a run down, so each side's fastest round is the
    # closest to its undisturbed speed: a second estimate, blind to which rounds were paired.
    def best(phase):
        fastest = [max(r[side][phase]['images_per_s'] for r in runs) for side in (0, 1)]
        return f"{fastest[0] / fastest[1]:5.2f}x"
    print(f"  {'candle / pytorch, fastest round of each':<44} train {best('train')}"
          f"{'':<13} | infer {best('infer')}")
PY
done
