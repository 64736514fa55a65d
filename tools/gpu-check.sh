#!/usr/bin/env bash
# The device check: everything a GPU machine is asked in one go, in under 8 minutes on one H200,
# written into $OUT (the device tool's return folder; ./gpu-check-out elsewhere). Each step runs
# under its own timeout and the script always goes on, so one failure does not hide the rest;
# the summary at the end says which steps passed.
#
#   0. env       nvidia-smi, glibc, torch and cuDNN versions, `ldd` of the binary; then a one-step
#                smoke bench with cuDNN's error log on (the PTX the driver compiles on first use
#                is cached for the later steps)
#   1. check     `cxr-train gpu-check`: the same seeded models on the CPU and on CUDA, TF32 off,
#                differences of logits, loss, gradients and running statistics; then the same
#                in bf16 against the CPU's emulation of bf16 (printed, not judged)
#   2. bench     bench/gpu.sh: DenseNet121 and ResNet50 at 224, batch 64, against PyTorch eager
#                (f32), and cxr-train in bf16 against PyTorch with channels_last and bf16 autocast
#   3. fit       a short real fit, predict and score on the demo data at 224 on the GPU, with the
#                GPU's peak memory
#
# Run it ON the GPU machine (CUDA 13 and PyTorch, no Rust) over the payload `make gpu-payload`
# builds here: `tools/gpu-check.sh` with target-cuda/payload carried. Rehearse it here on the CPU
# build: `DEVICE=cpu tools/gpu-check.sh target/release` (a folder of plain binaries works too).
#
# Usage: tools/gpu-check.sh [PAYLOAD]   (default target-cuda/payload; CHECKS="env check bench fit"
# picks steps; DEVICE, ROUNDS, BATCH, BENCH_SIZE, FIT_EPOCHS, FIT_SIZE, FIT_ARCH, TOTAL_LIMIT override the
# defaults)
set -uo pipefail
cd "$(dirname "$0")/.."

PAYLOAD=${1:-target-cuda/payload}
DEVICE=${DEVICE:-cuda:0}
CHECKS=${CHECKS:-"env check bench fit"}
ROUNDS=${ROUNDS:-2}
BATCH=${BATCH:-64}
FIT_EPOCHS=${FIT_EPOCHS:-2}
FIT_SIZE=${FIT_SIZE:-224}
FIT_ARCH=${FIT_ARCH:-densenet121}
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

# ---- the binaries: unpacked from .xz where they were packed ------------------------------------
BIN=$WORK/bin
mkdir -p "$BIN"
for tool in cxr-train cxr-index cxr-preprocess cxr-eval; do
    if [ -f "$PAYLOAD/$tool.xz" ]; then
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
            "$PAYLOAD/$tool.xz" "$BIN/$tool"
    elif [ -f "$PAYLOAD/$tool" ]; then
        cp "$PAYLOAD/$tool" "$BIN/$tool"
    else
        note "payload: no $tool(.xz) in $PAYLOAD: build it with \`make gpu-payload\` and carry $PAYLOAD"
        exit 1
    fi
    chmod +x "$BIN/$tool"
done

# ---- CUDA's libraries: PyTorch's nvidia wheels, and the driver's libcuda -----------------------
if [ "$DEVICE" != cpu ]; then
    site=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))' 2>/dev/null)
    [ -n "$site" ] || note "env: python3 cannot import torch: the CUDA libraries are looked for on the system alone"
    libs=$(find "${site:-/nonexistent}/nvidia" -mindepth 2 -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd: || true)
    [ -d /usr/local/nvidia/lib64 ] && libs=$libs:/usr/local/nvidia/lib64
    export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
# The driver compiles candle's PTX (about 5 MB) on first use; keep it for the later processes.
export CUDA_CACHE_MAXSIZE=4294967296 CUDA_CACHE_PATH=$WORK/cuda-cache

# Runs step NAME: `step NAME SECONDS command...`, its output in $OUT/NAME.log. No step runs past
# the whole check's deadline (TOTAL_LIMIT seconds), so the summary is always written.
DEADLINE=$((SECONDS + ${TOTAL_LIMIT:-470}))
step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS left=$((DEADLINE - SECONDS))
    if [ "$left" -lt 20 ]; then
        note "$name: skipped, the check's time is up"
        return 1
    fi
    [ "$limit" -le "$left" ] || limit=$left
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/$name.log"
    # Through bash, so that a step can be one of the functions below (exported at the start).
    timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >>"$OUT/$name.log" 2>&1
    local rc=$?
    local verdict=ok
    [ $rc = 0 ] || verdict="FAILED (rc $rc$([ $rc = 124 ] && echo ', timed out'))"
    note "$name: $verdict in $((SECONDS - start)) s"
    return $rc
}

# The GPU's used memory, sampled every 0.2 s while a step runs; the peak is printed at the end.
gpu_memory_sampler() {
    [ "$DEVICE" = cpu ] && return
    while :; do
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "${DEVICE#cuda:}" 2>/dev/null
        sleep 0.2
    done >"$WORK/gpu-mem" &
    SAMPLER=$!
}
gpu_memory_peak() {
    [ "$DEVICE" = cpu ] && { echo n/a; return; }
    kill "$SAMPLER" 2>/dev/null
    wait "$SAMPLER" 2>/dev/null
    echo "$(sort -n "$WORK/gpu-mem" | tail -1) MiB (nvidia-smi, whole GPU)"
}

wants() { [[ " $CHECKS " == *" $1 "* ]]; }

env_step() {
    uname -a
    ldd --version | head -1
    nvidia-smi || true
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)' || true
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    ldd "$BIN/cxr-train"
    ! ldd "$BIN/cxr-train" | grep 'not found'
}

smoke_step() {
    # cuDNN 9 logs its errors and warnings where CUDNN_LOGDEST_DBG points.
    CUDNN_LOGLEVEL_DBG=2 CUDNN_LOGDEST_DBG=$OUT/cudnn.log \
        "$BIN/cxr-train" bench --model densenet121 --size 64 --batch 2 --steps 1 --warmup 0 --device "$DEVICE"
}

fit_step() {
    local data=$WORK/fit manifest=$WORK/fit/nih.parquet shards=$WORK/fit/nih-$FIT_SIZE
    mkdir -p "$data"
    "$BIN/cxr-index" nih --root data/nih-demo --csv data/nih-demo/Data_Entry_2017_v2020.demo.csv \
        --require-images --fractions 0.7,0.15,0.15 --out "$manifest" &&
        "$BIN/cxr-preprocess" --manifest "$manifest" --root data/nih-demo --size "$FIT_SIZE" --out "$shards" &&
        "$BIN/cxr-train" fit --manifest "$manifest" --shards "$shards" --run-dir "$data/run" --seed 0 \
            --arch "$FIT_ARCH" --task view --batch-size 32 --epochs "$FIT_EPOCHS" --lr 1e-3 --hflip \
            --log-every 5 --device "$DEVICE" &&
        "$BIN/cxr-train" predict --checkpoint "$data/run/best.safetensors" --shards "$shards" \
            --manifest "$manifest" --split test --device "$DEVICE" --out "$data/preds.parquet" &&
        "$BIN/cxr-eval" score "$data/preds.parquet" --manifest "$manifest" --blank negative \
            --bootstrap 1000 --out "$data/eval" --no-plots &&
        cp "$data/eval/metrics.json" "$OUT/fit-metrics.json"
}

export BIN OUT WORK DEVICE FIT_EPOCHS FIT_SIZE FIT_ARCH
export -f env_step smoke_step fit_step
start=$SECONDS
note "gpu-check on $(hostname) at $(date -u +%FT%TZ), device $DEVICE, payload $PAYLOAD"
if wants env; then
    step env 60 env_step
    step smoke 150 smoke_step
fi
if wants check; then
    if "$BIN/cxr-train" gpu-check --help >/dev/null 2>&1; then
        step check 150 "$BIN/cxr-train" gpu-check --device "$DEVICE"
        grep -E '^gpu-check|^[a-z0-9_]+ [0-9]+x[0-9]+ batch|cuDNN plans|  1 .*(logits|gradients)|NO ' \
            "$OUT/check.log" | sed 's/^/check: /' | tee -a "$SUMMARY" >/dev/null
        step check-bf16 100 "$BIN/cxr-train" gpu-check --device "$DEVICE" --precision bf16 \
            --models tiny_resnet_bottleneck,densenet121 --steps 2
        grep -E '^[a-z].*batch|  1 .*(logits|gradients)' "$OUT/check-bf16.log" | sed 's/^/check-bf16: /' |
            tee -a "$SUMMARY" >/dev/null
    else
        note "check: skipped (this cxr-train has no gpu-check)"
    fi
fi
if wants bench; then
    step bench 330 env MODELS="densenet121 resnet50" SIZE="${BENCH_SIZE:-224}" BATCH="$BATCH" ROUNDS="$ROUNDS" STEPS=5 \
        DEVICE="$DEVICE" bench/gpu.sh "$BIN/cxr-train"
    grep -v -E '^\s+round|^==' "$OUT/bench.log" | sed 's/^/bench: /' | tee -a "$SUMMARY" >/dev/null
fi
if wants fit; then
    gpu_memory_sampler
    step fit 200 fit_step
    note "fit: GPU peak memory $(gpu_memory_peak)"
    python3 - "$OUT/fit-metrics.json" <<'PY' 2>/dev/null | tee -a "$SUMMARY" >/dev/null
import json, sys
for t in json.load(open(sys.argv[1]))["tasks"]:
    ci = t["ci"]
    print(f"fit: test {t['task']} AUC {t['auc']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}], {t['n']} images")
PY
    grep -E '^step .*valid|images/s' "$OUT/fit.log" | tail -3 | sed 's/^/fit: /' | tee -a "$SUMMARY" >/dev/null
fi
note "total: $((SECONDS - start)) s"
echo
cat "$SUMMARY"
