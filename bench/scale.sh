#!/usr/bin/env bash
# The pipeline's own steps on a CheXpert-shaped dataset of N images: how time, memory and disk grow.
#
#   bench/scale.sh N        (N up to 223,414, CheXpert-v1.0-small's train.csv)
#
# Builds, once per N, a train.csv with the real file's structure (bench/make_chexpert_train.py: its
# first N rows) and a 390x320 JPEG for every row, derived from the bundled NIH images with
# per-image variation (bench/make_chexpert_jpegs.py). Then runs, each measured by bench/measure.py
# (wall and CPU seconds, peak heap and peak resident memory):
#   index       cxr-index chexpert --require-images (80/10/10 patient split)
#   preprocess  cxr-preprocess to 224 px (the study's size), whole films padded
#   loader      one pass of the training data loader over the train split at 224, with the
#               real-data pipelines' augmentation (random resized crop 0.8, flips), batch 16
#   preprocess  to 64 px, for the small model below
#   fit         ResNet18 at 64 px, 50 steps of batch 16 and one validation over the valid split
#               (a checkpoint to predict with; it also times opening and checking every shard)
#   predict     that checkpoint over the test split
#   score       study-level (max over views), 14 findings, U-Ignore, 1,000 patient bootstraps
# and prints one table row per step with microseconds per image and the step's disk use. Steps
# already done are not redone (delete $WORK/N/<step>.json to time one again); the table and its
# records are in $WORK/N/scale.txt and $WORK/N/*.json.
#
# Environment: SCALE_DIR (default target/scale), CXR_SHARED (the shared folder, default ../shared),
# SCALE_KEEP_IMAGES=1 keeps the JPEGs and shards afterwards (bench/scale-resume.sh needs them).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:?usage: bench/scale.sh N (images, up to 223414)}
SHARED=${CXR_SHARED:-../shared}
DATA=$SHARED/data
WORK=${SCALE_DIR:-target/scale}/$N
BIN=target/release
mkdir -p "$WORK"
cargo build --quiet --release --workspace

if [ ! -f "$WORK/data.done" ]; then
  echo "scale: making $N images under $WORK/root (once)" >&2
  [ -d "$DATA/nih/images" ] || { echo "bench/scale.sh: no $DATA/nih/images: set CXR_SHARED to the folder holding data/ and golden/, or put shared/ beside the repository" >&2; exit 1; }
  python3 bench/make_chexpert_train.py "$WORK/train.csv" "$N"
  python3 bench/measure.py "$WORK/data.json" -- \
    python3 bench/make_chexpert_jpegs.py "$WORK/train.csv" "$DATA/nih/images" "$WORK/root"
  touch "$WORK/data.done"
fi

# step NAME IMAGES OUTPUT -- COMMAND...: run and measure COMMAND unless NAME.json exists; OUTPUT
# (what the step writes, - for nothing) is removed first and its size is the step's disk use.
step() {
  local name=$1 images=$2 output=$3
  shift 4
  if [ ! -f "$WORK/$name.json" ]; then
    echo "scale: $name" >&2
    [ "$output" = - ] || rm -rf "$output"
    python3 bench/measure.py "$WORK/$name.tmp.json" -- "$@" >"$WORK/$name.log" 2>&1 ||
      { echo "scale: $name failed, see $WORK/$name.log" >&2; exit 1; }
    python3 - "$WORK/$name.tmp.json" "$images" "$( [ "$output" = - ] && echo 0 || du -sb "$output" | cut -f1)" <<'PY'
import json, sys
path, images, disk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
record = json.load(open(path))
record.update(images=images, disk_mb=round(disk / 2**20, 1))
json.dump(record, open(path, "w"))
PY
    mv "$WORK/$name.tmp.json" "$WORK/$name.json"
  fi
}

# SPLIT: manifest rows in that split, from the summary cxr-index wrote (never the Parquet by hand).
rows_of() {
  python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['splits'].get(sys.argv[2], 0))" \
    "$WORK/index-summary.json" "$1"
}

step index "$N" "$WORK/manifest.parquet" -- \
  $BIN/cxr-index chexpert --csv "$WORK/train.csv" --root "$WORK/root" --require-images \
  --summary-json "$WORK/index-summary.json" --out "$WORK/manifest.parquet"
step preprocess-224 "$N" "$WORK/shards-224" -- \
  $BIN/cxr-preprocess --manifest "$WORK/manifest.parquet" --root "$WORK/root" --size 224 \
  --out "$WORK/shards-224"
TRAIN=$(rows_of train)
BATCH=16
step loader-224 $(( TRAIN / BATCH * BATCH )) - -- \
  $BIN/cxr-train bench --loader --shards "$WORK/shards-224" --manifest "$WORK/manifest.parquet" \
  --batch $BATCH --warmup 0 --steps $(( TRAIN / BATCH )) --crop resized:0.8 --hflip true
step preprocess-64 "$N" "$WORK/shards-64" -- \
  $BIN/cxr-preprocess --manifest "$WORK/manifest.parquet" --root "$WORK/root" --size 64 \
  --out "$WORK/shards-64"
step fit-64 "$(rows_of valid)" "$WORK/run" -- \
  $BIN/cxr-train fit --manifest "$WORK/manifest.parquet" --shards "$WORK/shards-64" \
  --run-dir "$WORK/run" --arch resnet18 --task pathologies --policy u-ignore --batch-size $BATCH \
  --max-steps 50 --eval-every 50 --epochs 1 --hflip --crop resized:0.8 --seed 0
step predict-64 "$(rows_of test)" "$WORK/predictions.parquet" -- \
  $BIN/cxr-train predict --checkpoint "$WORK/run/best.safetensors" --shards "$WORK/shards-64" \
  --manifest "$WORK/manifest.parquet" --split test --out "$WORK/predictions.parquet"
step score "$(rows_of test)" "$WORK/eval" -- \
  $BIN/cxr-eval score --manifest "$WORK/manifest.parquet" --policy u-ignore \
  --aggregate study-max --bootstrap 1000 --seed 0 --out "$WORK/eval" "$WORK/predictions.parquet"

python3 - "$WORK" "$N" <<'PY' | tee "$WORK/scale.txt"
import json, os, sys
work, n = sys.argv[1], int(sys.argv[2])
print(f"N = {n:,} images ({os.cpu_count()} cores)")
print(f"{'step':<16}{'images':>9}{'wall s':>9}{'CPU s':>9}{'us/image':>10}{'heap MB':>9}{'RSS MB':>9}{'disk MB':>10}")
for name in ["data", "index", "preprocess-224", "loader-224", "preprocess-64", "fit-64", "predict-64", "score"]:
    path = os.path.join(work, f"{name}.json")
    if not os.path.exists(path):
        continue
    r = json.load(open(path))
    images = r.get("images", n)
    disk = r.get("disk_mb", "")
    print(f"{name:<16}{images:>9,}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{1e6 * r['wall_s'] / images:>10.0f}"
          f"{r['peak_heap_mb']:>9.0f}{r['max_rss_mb']:>9.0f}{disk:>10}")
PY
if [ -z "${SCALE_KEEP_IMAGES:-}" ]; then rm -rf "$WORK/root" "$WORK/shards-224" "$WORK/data.done"; fi
