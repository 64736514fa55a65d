#!/usr/bin/env bash
# The real-data pipelines as Make would run them (`make -n`, nothing trained): every experiment
# predicts and scores CheXpert's official validation set per study and the held-out patients,
# fine-tunes from ImageNet unless the experiment says otherwise, and pretraining compares every
# pair, in-domain against ImageNet above all. Each experiment.json is made for real and read by
# `cxr-eval report`, so a note that breaks the JSON (an apostrophe, a comma) fails here.
#   tests/pipelines.sh            (BIN: where cxr-eval is; target/debug after cargo test)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/debug}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail() { echo "tests/pipelines.sh: $*" >&2; exit 1; }
# One command per line: the recipes' continuation lines joined, runs of spaces squeezed.
plan() { make -n "$@" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | tr -s ' '; }
has() { grep -qE -- "$2" <<<"$1" || fail "$3"; }

for p in easy policy weight-decay aux dam architecture pretraining; do
  exp=$p
  args=(-f "pipelines/$p.mk" CHEXPERT=/data/chexpert NIH=/data/nih OUT="$out" BIN="$BIN")
  if [ "$p" = pretraining ]; then exp=pretraining-resnet50; args+=(PT_ARCH=resnet50); fi
  e=$out/$exp
  steps=$(plan "${args[@]}")
  has "$steps" "predict .*--split official .*--out $e/preds/official/" "$p: the official set is not predicted"
  has "$steps" "score $e/preds/official/.*--aggregate study-max --out $e/eval/official/" \
    "$p: the official set is not scored per study"
  has "$steps" "score $e/preds/test/.*--aggregate image --out $e/eval/test/" "$p: the held-out patients are not scored"
  if [ "$p" != easy ]; then
    has "$steps" "fit .*--init imagenet:weights/" "$p: no run starts from ImageNet"
    has "$steps" "download https://download.pytorch.org/models/" "$p: no download message for the weights"
  fi
  make -s "${args[@]}" "$e/experiment.json"
  "$BIN/cxr-eval" report "$e" --out "$out/$p.md" 2>/dev/null
  has "$(cat "$out/$p.md")" "^### Official evaluation set \(CheXpert valid.csv" "$p: the report has no official section"
done

# Pretraining: every pair, on both sets, in-domain against ImageNet included.
e=$out/pretraining-resnet50
steps=$(plan -f pipelines/pretraining.mk PT_ARCH=resnet50 CHEXPERT=/data/chexpert NIH=/data/nih OUT="$out" BIN="$BIN")
for set in official test; do
  for pair in imagenet:random nih-view:random barlow:random nih-view:imagenet barlow:imagenet barlow:nih-view; do
    a=${pair%:*} b=${pair#*:}
    has "$steps" "compare $e/preds/$set/${a}__s0.parquet $e/preds/$set/${b}__s0.parquet .*--out $e/compare/$set/${a}_vs_${b}__s0" \
      "pretraining: $a is not compared with $b on $set"
  done
done
has "$steps" "pretrain .*--positives patient .*--optimizer lars .*--keep last" "pretraining: Barlow Twins is not the reference recipe"
has "$steps" "fit .*--init checkpoint:$e/pre/barlow/last.safetensors" "pretraining: fine-tuning does not start from Barlow Twins' last weights"
has "$(cat "$e/experiment.json")" "Batch 256 instead of 2048\. Epochs 100 instead of 1000\." \
  "pretraining: the report does not state the reductions of the Barlow Twins recipe"
# A launcher (Slurm's srun) prefixes every training and prediction command, and only those.
steps=$(plan -f pipelines/pretraining.mk PT_ARCH=resnet50 CHEXPERT=/data/chexpert NIH=/data/nih OUT="$out" BIN="$BIN" \
  LAUNCH='srun --gres=gpu:1 --ntasks=1')
trains=$(grep -c "$BIN/cxr-train " <<<"$steps")
launched=$(grep -c "srun --gres=gpu:1 --ntasks=1 $BIN/cxr-train " <<<"$steps")
[ "$trains" -gt 0 ] && [ "$trains" = "$launched" ] || fail "LAUNCH prefixes $launched of $trains cxr-train commands"
grep -q "srun.*cxr-eval\|srun.*cxr-preprocess" <<<"$steps" && fail "LAUNCH prefixes a command that needs no GPU"

echo "tests/pipelines.sh: 7 real pipelines plan official and held-out scoring, ImageNet inits, every pretraining pair and LAUNCH"
