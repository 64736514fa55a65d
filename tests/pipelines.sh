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
plan() { make --no-print-directory -n "$@" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | tr -s ' '; }
has() { grep -qE -- "$2" <<<"$1" || fail "$3"; }
# What each command of a plan writes, one path per line: --out, --run-dir and --summary-json, the
# targets of > and of `&& mv`; `cxr-eval curves --out D` writes its named figures, D/*.png.
outputs() {
  sed -E 's/(cxr-eval curves .*--out [^ ]+)/\1\/*.png/' |
    grep -oE -- '(--out|--run-dir|--summary-json) [^ ]+|> [^ ]+|&& mv [^ ]+ [^ ]+' |
    sed -E 's/^(--[a-z-]+|>) //; s/^&& mv [^ ]+ //'
}
# Make -j runs a plan's commands in any order its dependencies allow: no two may write one file,
# and none may write into a directory another command owns.
one_writer() { # PLAN NAME
  local all twice inside
  all=$(outputs <<<"$1" | sort)
  twice=$(uniq -d <<<"$all")
  [ -z "$twice" ] || fail "$2: more than one command writes $(head -1 <<<"$twice")"
  inside=$(awk 'NR > 1 && index($0, prev "/") == 1 { print prev " holds " $0 } { prev = $0 }' <<<"$all")
  [ -z "$inside" ] || fail "$2: one command writes into another's output: $(head -1 <<<"$inside")"
  [ "$(wc -l <<<"$all")" -gt 10 ] || fail "$2: only $(wc -l <<<"$all") outputs found in its plan"
}

for p in easy policy weight-decay aux dam architecture pretraining; do
  exp=$p
  args=(-f "pipelines/$p.mk" CHEXPERT=/data/chexpert NIH=/data/nih OUT="$out" BIN="$BIN")
  if [ "$p" = pretraining ]; then exp=pretraining-resnet50; args+=(PT_ARCH=resnet50); fi
  e=$out/$exp
  steps=$(plan "${args[@]}")
  one_writer "$steps" "$p"
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

# Cross-dataset: the CheXpert model (the study's plain baseline, so the run store trains it once)
# is scored on CheXpert's official set and on NIH, each against its own manifest and shards;
# MIMIC-CXR's official test split only when MIMIC is given; NIH's train split with leave only.
e=$out/cross-dataset
args=(-f pipelines/cross-dataset.mk CHEXPERT=/data/chexpert NIH=/data/nih OUT="$out" BIN="$BIN")
steps=$(plan "${args[@]}")
one_writer "$steps" cross-dataset
[ "$(make -s "${args[@]}" flags-chexpert)" = "$(make -s -f pipelines/policy.mk CHEXPERT=/data/chexpert flags-u-ignore)" ] ||
  fail "cross-dataset: the CheXpert model is not the study's baseline run"
has "$steps" "fit --manifest $out/data/chexpert.parquet .*--run-dir $e/runs/chexpert__s0 " "cross-dataset: no model trained on CheXpert"
has "$steps" "score $e/preds/official/chexpert__s0.parquet --manifest $out/data/chexpert.parquet .*--aggregate study-max" \
  "cross-dataset: CheXpert's official set is not scored per study"
has "$steps" "predict --checkpoint $e/runs/chexpert__s0/best.safetensors --shards $out/data/nih-224 --manifest $out/data/nih.parquet --split valid .*--out $e/preds/nih/chexpert__s0.parquet" \
  "cross-dataset: the CheXpert model does not predict NIH's images"
has "$steps" "score $e/preds/nih/chexpert__s0.parquet --manifest $out/data/nih.parquet .*--aggregate image --out $e/eval/nih/chexpert__s0 " \
  "cross-dataset: NIH is not scored against its own manifest"
grep -q -- "--allow-train-split\|mimic" <<<"$steps" && fail "cross-dataset: MIMIC or NIH's train split planned unasked"
steps=$(plan "${args[@]}" NIH_SPLIT=train)
has "$steps" "predict .*--manifest $out/data/nih.parquet --split train .*--out $e/preds/nih/" "cross-dataset: NIH_SPLIT=train is not predicted"
has "$steps" "score $e/preds/nih/chexpert__s0.parquet .*--allow-train-split" \
  "cross-dataset: NIH's train split is not scored with --allow-train-split"
steps=$(plan "${args[@]}" MIMIC=/data/mimic)
one_writer "$steps" "cross-dataset with MIMIC"
has "$steps" "cxr-index mimic --root /data/mimic --metadata /data/mimic/mimic-cxr-2.0.0-metadata.csv.gz --labels /data/mimic/mimic-cxr-2.0.0-chexpert.csv.gz --split /data/mimic/mimic-cxr-2.0.0-split.csv.gz --source-split test .*--out $out/data/mimic.parquet" \
  "cross-dataset: MIMIC's manifest is not its test split"
has "$steps" "predict .*--shards $out/data/mimic-224 --manifest $out/data/mimic.parquet --split official .*--out $e/preds/mimic/chexpert__s0.parquet" \
  "cross-dataset: the CheXpert model does not predict MIMIC's official test split"
has "$steps" "score $e/preds/mimic/chexpert__s0.parquet --manifest $out/data/mimic.parquet .*--aggregate study-max" \
  "cross-dataset: MIMIC is not scored per study against its own manifest"
make -s "${args[@]}" MIMIC=/data/mimic "$e/experiment.json"
"$BIN/cxr-eval" report "$e" --out "$out/cross-dataset.md" 2>/dev/null
for section in "CheXpert's official validation set" "NIH ChestX-ray14, split valid" "MIMIC-CXR, its official test split"; do
  has "$(cat "$out/cross-dataset.md")" "^### $section" "cross-dataset: the report has no section $section"
done

# The demo is pipelines/study.mk: the data first, then every experiment side by side. Apart from
# the data (made before any experiment starts: the first line of the plan is that stage), no two
# commands of all the experiments together may write one file.
demo=$(plan -f pipelines/demo.mk OUT="$out/demo" BIN="$BIN")
has "$(head -1 <<<"$demo")" "-f pipelines/easy.mk data &&.* -f pipelines/pretraining.mk data" \
  "demo: the data is not made before the experiments"
one_writer "$(grep -v -- "--out $out/demo/data/" <<<"$demo")" "demo (all experiments at once)"
study=$(plan -f pipelines/study.mk CHEXPERT=/data/chexpert NIH=/data/nih OUT="$out/study" BIN="$BIN")
has "$study" "-f pipelines/pretraining.mk PT_ARCH=densenet121$" "study: no DenseNet121 pretraining"
one_writer "$(grep -v -- "--out $out/study/data/" <<<"$study")" "study (all experiments at once)"

echo "tests/pipelines.sh: 7 real pipelines plan official and held-out scoring, ImageNet inits, every pretraining pair and LAUNCH; cross-dataset scores the CheXpert baseline on NIH (and MIMIC when given) against their own manifests; no two commands of a plan, or of the demo's experiments together, write one file"
