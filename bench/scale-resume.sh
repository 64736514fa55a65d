#!/usr/bin/env bash
# kill -9 in the middle of preprocess, fit and predict at scale, then re-run: finished work is not
# redone and the result equals an uninterrupted run's.
#
#   SCALE_KEEP_IMAGES=1 bench/scale.sh N && bench/scale-resume.sh N [STEP...]
#
# Uses the images, manifest and outputs that bench/scale.sh left in $SCALE_DIR/N (its
# preprocess-224 shards and predictions are the uninterrupted references) and, per step:
#   preprocess  to 224 px again, killed once half the shards are done; re-run; index.json (every
#               shard's SHA-256) compared with the uninterrupted run's
#   fit         ResNet18 at 64 px, 200 steps of batch 16 with validation (and a checkpoint) every
#               100, run whole once and once killed after its step-100 checkpoint; re-run with
#               --resume; final weights and metrics compared
#   predict     the test split again, killed after 5 chunks of 2,048 images; re-run; the
#               predictions file compared byte for byte
# SCALE_BIN runs the binaries in that folder instead of building target/release (a copy keeps a
# long check apart from builds going on meanwhile). It prints, per step, how much was done when killed, the re-run's time against the whole run's,
# and whether the results are identical. Exit status 1 if any differs.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:?usage: bench/scale-resume.sh N [preprocess] [fit] [predict] (N as given to bench/scale.sh)}
shift
STEPS=${*:-preprocess fit predict}
wanted() { [[ " $STEPS " == *" $1 "* ]]; }
WORK=${SCALE_DIR:-target/scale}/$N
BIN=${SCALE_BIN:-target/release}
[ -d "$WORK/root" ] && [ -f "$WORK/shards-224/index.json" ] ||
  { echo "scale-resume: run SCALE_KEEP_IMAGES=1 bench/scale.sh $N first" >&2; exit 1; }
M=$WORK/manifest.parquet
[ -n "${SCALE_BIN:-}" ] || cargo build --quiet --release --workspace
failed=0
REPORT=$WORK/resume.txt
say() { echo "$*" | tee -a "$REPORT"; }
say "== $(date -u '+%F %T') UTC, steps: $STEPS"
seconds() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['wall_s'])" "$1"; }

# kill_when CONDITION DELAY -- COMMAND...: start COMMAND, SIGKILL it DELAY seconds after the
# shell test CONDITION first holds.
kill_when() {
  local condition=$1 delay=$2
  shift 3
  "$@" >"$WORK/killed.log" 2>&1 &
  local pid=$!
  until eval "$condition"; do
    kill -0 $pid 2>/dev/null || { echo "scale-resume: finished before $condition" >&2; exit 1; }
    sleep 0.2
  done
  sleep "$delay"
  kill -9 $pid
  wait $pid 2>/dev/null || true
}

# A checkpoint's tensors (name, dtype, shape, SHA-256 of the bytes) and its metadata without the
# run directory, which differs between the two runs by design.
tensors() {
  python3 - "$1" <<'PY'
import hashlib, json, struct, sys
raw = open(sys.argv[1], "rb").read()
size = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + size])
meta = header.pop("__metadata__", {})
config = json.loads(meta.pop("training_config", "{}"))
for key in sorted(meta):
    print(key, meta[key])
for tool, text in config.items():
    settings = json.loads(text)
    settings.pop("run_dir", None)
    print(tool, json.dumps(settings, sort_keys=True))
for name in sorted(header):
    t = header[name]
    start, end = t["data_offsets"]
    print(name, t["dtype"], t["shape"], hashlib.sha256(raw[8 + size + start:8 + size + end]).hexdigest())
PY
}

# A run's metrics.jsonl without its wall-clock fields (throughput, data wait).
metrics() {
  python3 - "$1/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    record = json.loads(line)
    record.pop("images_per_s", None)
    record.pop("data_wait", None)
    print(json.dumps(record, sort_keys=True))
PY
}

same() { # A B WHAT: byte-identical and not empty
  cat "$1" >"$WORK/.same-a"
  cat "$2" >"$WORK/.same-b"
  if [ -s "$WORK/.same-a" ] && cmp -s "$WORK/.same-a" "$WORK/.same-b"; then
    say "  $3: identical"
  else
    say "  $3: DIFFERENT or empty ($1, $2)"
    failed=1
  fi
}

resume_preprocess() {
  OUT=$WORK/shards-224-resumed
  rm -rf "$OUT"
  preprocess=($BIN/cxr-preprocess --manifest "$M" --root "$WORK/root" --size 224 --out "$OUT")
  SHARDS=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['shards']))" "$WORK/shards-224/index.json")
  # Shards are built in parallel, not in order: count the finished ones (their sidecars).
  finished() { ls "$OUT" 2>/dev/null | grep -c '^shard-.*\.json$'; }
  kill_when "[ \$(finished) -ge $(( SHARDS / 2 )) ]" 0 -- "${preprocess[@]}"
  done_then=$(finished)
  python3 bench/measure.py "$WORK/preprocess-resumed.json" -- "${preprocess[@]}" >"$WORK/preprocess-resumed.log" 2>&1
  say "preprocess 224: killed with $done_then of $SHARDS shards done; re-run $(seconds "$WORK/preprocess-resumed.json") s against $(seconds "$WORK/preprocess-224.json") s whole"
  say "  $(grep 'images written' "$WORK/preprocess-resumed.log")"
  same "$WORK/shards-224/index.json" "$OUT/index.json" "index.json (every shard's SHA-256)"
  rm -rf "$OUT"
}

resume_fit() {
  fit=($BIN/cxr-train fit --manifest "$M" --shards "$WORK/shards-64" --arch resnet18 \
    --task pathologies --policy u-ignore --batch-size 16 --max-steps 200 --eval-every 100 \
    --epochs 1 --hflip --crop resized:0.8 --seed 0 --keep last)
  rm -rf "$WORK/fit-whole" "$WORK/fit-killed"
  python3 bench/measure.py "$WORK/fit-whole.json" -- "${fit[@]}" --run-dir "$WORK/fit-whole" >"$WORK/fit-whole.log" 2>&1
  # The step-100 checkpoint is committed when last.state.json appears; 3 s later the run is
  # between steps 100 and 200.
  kill_when "[ -e $WORK/fit-killed/last.state.json ]" 3 -- "${fit[@]}" --run-dir "$WORK/fit-killed"
  step_then=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$WORK/fit-killed/last.state.json")
  python3 bench/measure.py "$WORK/fit-resumed.json" -- "${fit[@]}" --run-dir "$WORK/fit-killed" --resume >"$WORK/fit-resumed.log" 2>&1
  say "fit ResNet18 64 px, 200 steps: killed after the step-$step_then checkpoint; re-run $(seconds "$WORK/fit-resumed.json") s against $(seconds "$WORK/fit-whole.json") s whole"
  same <(tensors "$WORK/fit-whole/best.safetensors") <(tensors "$WORK/fit-killed/best.safetensors") \
    "best.safetensors (every tensor, and the metadata but the run directory)"
  same <(tensors "$WORK/fit-whole/last.safetensors") <(tensors "$WORK/fit-killed/last.safetensors") \
    "last.safetensors (likewise)"
  same <(metrics "$WORK/fit-whole") <(metrics "$WORK/fit-killed") "metrics.jsonl (less throughput)"
}

resume_predict() {
  predict=($BIN/cxr-train predict --checkpoint "$WORK/run/best.safetensors" --shards "$WORK/shards-64" \
    --manifest "$M" --split test)
  OUT=$WORK/predictions-resumed.parquet
  rm -rf "$OUT" "$OUT.partial"
  kill_when "[ -e $OUT.partial/chunk-00004.f32 ]" 0 -- "${predict[@]}" --out "$OUT"
  chunks_then=$(ls "$OUT.partial" | grep -c '^chunk-')
  python3 bench/measure.py "$WORK/predict-resumed.json" -- "${predict[@]}" --out "$OUT" >"$WORK/predict-resumed.log" 2>&1
  say "predict 64 px, test split: killed with $chunks_then chunks scored; re-run $(seconds "$WORK/predict-resumed.json") s against $(seconds "$WORK/predict-64.json") s whole"
  say "  $(grep '^resumed' "$WORK/predict-resumed.log")"
  same "$WORK/predictions.parquet" "$OUT" "predictions file"
}

for step in $STEPS; do "resume_$step"; done
exit $failed
