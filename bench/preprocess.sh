#!/usr/bin/env bash
# Images per second of cxr-preprocess against Pillow, side by side on the same files and cores.
#
# Two sets: NIH's 40 full-size PNGs (1024x1024, 6 of them RGBA; the list is repeated to make a
# run long enough to time) and CheXpert-sized JPEGs (2500x2000 grey, quality 95, ~1.4 MB, made
# from the NIH images by bench/preprocess_make_jpegs.py). Every tool makes 224x224 centre crops
# with Lanczos antialiasing on BENCH_JOBS cores; each figure is the best of BENCH_REPEAT runs
# (wall time of the whole run: process start, reading, decoding, resizing, writing shards).
#
# Environment: CXR_SHARED (the shared folder, default ../shared), BENCH_DIR (default
# target/bench-preprocess), BENCH_JPEGS (200), BENCH_PNG_REPEAT (5), BENCH_JOBS (2),
# BENCH_REPEAT (3).
set -euo pipefail
cd "$(dirname "$0")/.."

SHARED=${CXR_SHARED:-../shared}
DATA=$SHARED/data
WORK=${BENCH_DIR:-target/bench-preprocess}
N_JPEG=${BENCH_JPEGS:-200}
PNG_REPEAT=${BENCH_PNG_REPEAT:-5}
JOBS=${BENCH_JOBS:-2}
REPEAT=${BENCH_REPEAT:-3}
SIZE=224

[ -d "$DATA/nih/images-full" ] || { echo "bench/preprocess.sh: no $DATA/nih/images-full: set CXR_SHARED to the folder holding data/ and golden/, or put shared/ beside the repository" >&2; exit 1; }
python3 -c "import PIL" 2>/dev/null || python3 -m pip install -q pillow
# The whole workspace at once: a per-package build re-resolves features and rebuilds shared crates.
cargo build --quiet --release --workspace --bins --examples
BIN=target/release/cxr-preprocess
MANIFEST_TOOL=target/release/examples/preprocess_bench_manifest

mkdir -p "$WORK"
echo "bench: making $N_JPEG JPEGs of 2500x2000 in $WORK/jpeg (once)" >&2
python3 bench/preprocess_make_jpegs.py "$DATA/nih/images-full" "$WORK/jpeg" "$N_JPEG"


rust_rate() { # DIR REPEAT_LIST
    local dir=$1 repeat=$2 images best=0
    "$MANIFEST_TOOL" "$dir" "$WORK/manifest.parquet" "$repeat"
    images=$(( $(ls "$dir" | grep -ciE '\.(png|jpe?g)$') * repeat ))
    for _ in $(seq "$REPEAT"); do
        rm -rf "$WORK/out"
        local t0 t1
        t0=$(date +%s.%N)
        "$BIN" --manifest "$WORK/manifest.parquet" --root "$dir" --size $SIZE --jobs "$JOBS" --out "$WORK/out" 2>"$WORK/rust.log"
        t1=$(date +%s.%N)
        best=$(python3 -c "print(max($best, $images / ($t1 - $t0)))")
    done
    printf '%.1f' "$best"
}

pillow_rate() { # DIR REPEAT [--draft]
    local dir=$1 repeat=$2 best=0 rate
    shift 2
    : >"$WORK/list.txt"
    for _ in $(seq "$repeat"); do
        ls "$dir" | grep -iE '\.(png|jpe?g)$' | sort | sed "s|^|$dir/|" >>"$WORK/list.txt"
    done
    for _ in $(seq "$REPEAT"); do
        rate=$(python3 bench/pillow_baseline.py "$WORK/list.txt" --size $SIZE --procs "$JOBS" "$@" | sed 's/.*: \([0-9.]*\) images\/s/\1/')
        best=$(python3 -c "print(max($best, $rate))")
    done
    printf '%.1f' "$best"
}

ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }

echo "bench: NIH PNGs ($PNG_REPEAT x 40)" >&2
png_rust=$(rust_rate "$DATA/nih/images-full" "$PNG_REPEAT")
png_pillow=$(pillow_rate "$DATA/nih/images-full" "$PNG_REPEAT")
echo "bench: JPEGs ($N_JPEG)" >&2
jpg_rust=$(rust_rate "$WORK/jpeg" 1)
jpg_pillow=$(pillow_rate "$WORK/jpeg" 1)
jpg_draft=$(pillow_rate "$WORK/jpeg" 1 --draft)

echo
echo "Images per second, 224x224 centre crop, Lanczos, $JOBS cores (best of $REPEAT):"
printf '%-34s %14s %14s %14s %10s %10s\n' "set" "cxr-preprocess" "Pillow plain" "Pillow draft" "vs plain" "vs draft"
printf '%-34s %14s %14s %14s %10s %10s\n' "NIH PNG 1024x1024 (x$PNG_REPEAT)" "$png_rust" "$png_pillow" "n/a" "$(ratio "$png_rust" "$png_pillow")" "n/a"
printf '%-34s %14s %14s %14s %10s %10s\n' "JPEG 2500x2000 q95 ($N_JPEG)" "$jpg_rust" "$jpg_pillow" "$jpg_draft" "$(ratio "$jpg_rust" "$jpg_pillow")" "$(ratio "$jpg_rust" "$jpg_draft")"
