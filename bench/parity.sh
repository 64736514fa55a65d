#!/usr/bin/env bash
# make parity: cxr-train and PyTorch/torchvision trained run for run on the demo's recipes.
#
# For each task (view and sex from pipelines/easy.mk, the 14 findings from the pretraining
# pipeline's random-init configuration) and each seed, trains the pipeline's own configuration,
# its flags read from the pipeline with `make flags-C`, once with cxr-train and once with
# bench/parity_torch.py (the same model, initialisation scheme, optimiser, schedule, batch,
# augmentation, epochs and checkpoint selection, on the same shards and split), then scores both
# test predictions with cxr-eval score and prints, per task, both AUCs per seed, the means and
# the difference of the means with a 95% Welch interval (bench/parity_report.py), and draws both
# tools' loss curves on one figure per task. Seeds are not paired (the tools draw different
# random numbers); the comparison is of the recipes' distributions over seeds.
#
# Needs torch, torchvision and pyarrow (`python3 -m pip install torch torchvision pyarrow`).
# Usage: bench/parity.sh   (SEEDS, TASKS, OUT, THREADS override the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-"0 1 2 3 4"}
TASKS=${TASKS:-"view sex pathologies"}
OUT=${OUT:-parity-out}
THREADS=${THREADS:-$(nproc)}
BIN=${BIN:-target/release}

python3 -c 'import torch, torchvision, pyarrow' 2>/dev/null || {
    echo "bench/parity.sh needs PyTorch, torchvision and pyarrow:" \
        "python3 -m pip install torch torchvision pyarrow" >&2
    exit 1
}
cargo build --release --quiet --workspace

# The pipeline and configuration each task's recipe is read from.
pipeline() {
    case $1 in
        view | sex) echo "-f pipelines/easy.mk" ;;
        pathologies) echo "-f pipelines/pretraining.mk PT_ARCH=resnet18" ;;
        *) echo "unknown task $1 (view, sex or pathologies)" >&2; exit 2 ;;
    esac
}
config() { [ "$1" = pathologies ] && echo random || echo "$1"; }
ask() { make --no-print-directory -s $(pipeline "$1") OUT="$OUT" BIN="$BIN" CHEXPERT= NIH= "$2"; }

echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $THREADS threads;" \
    "torch $(python3 -c 'import torch; print(torch.__version__)')"
results=()
for task in $TASKS; do
    manifest=$(ask "$task" print-TARGET_MANIFEST)
    shards=$(ask "$task" "shards-$(config "$task")")
    ask "$task" "$shards/index.json" >/dev/null
    read -r -a flags <<<"$(ask "$task" "flags-$(config "$task")")"
    echo "$task: ${flags[*]} on $shards"
    for seed in $SEEDS; do
        for tool in cxr torch; do
            run="$OUT/parity/runs/$tool-$task-s$seed"
            preds="$OUT/parity/preds/$tool-$task-s$seed"
            mkdir -p "$(dirname "$preds")" "$(dirname "$run")"
            start=$(date +%s)
            if [ "$tool" = cxr ]; then
                [ -e "$preds.parquet" ] || {
                    "$BIN/cxr-train" fit --manifest "$manifest" --shards "$shards" --run-dir "$run" \
                        --resume --threads "$THREADS" --seed "$seed" "${flags[@]}" >"$run.log" 2>&1
                    "$BIN/cxr-train" predict --checkpoint "$run/best.safetensors" --shards "$shards" \
                        --manifest "$manifest" --split test --out "$preds.parquet" >/dev/null
                }
                file="$preds.parquet"
            else
                [ -e "$preds.csv" ] || python3 bench/parity_torch.py --manifest "$manifest" \
                    --shards "$shards" --run-dir "$run" --predictions "$preds.csv" \
                    --threads "$THREADS" --seed "$seed" "${flags[@]}" >"$run.log" 2>&1
                file="$preds.csv"
            fi
            "$BIN/cxr-eval" score "$file" --manifest "$manifest" --blank negative \
                --bootstrap 0 --out "$OUT/parity/eval/$tool-$task-s$seed" --no-plots >/dev/null
            echo "  seed $seed $tool: $(($(date +%s) - start)) s"
            results+=("$task $tool $seed $OUT/parity/eval/$tool-$task-s$seed/metrics.json")
        done
    done
    "$BIN/cxr-eval" curves $(for s in $SEEDS; do echo "$OUT/parity/runs/cxr-$task-s$s"; done) \
        $(for s in $SEEDS; do echo "$OUT/parity/runs/torch-$task-s$s"; done) \
        --out "$OUT/parity/figures/$task" >/dev/null
done
printf '%s\n' "${results[@]}" | python3 bench/parity_report.py | tee "$OUT/parity/table.md"
echo "figures: $OUT/parity/figures/*/loss.png; table: $OUT/parity/table.md"
