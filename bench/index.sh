#!/usr/bin/env bash
# cxr-index speed: CheXpert-sized train.csv (synthetic, 223,414 rows) and NIH's full label file
# (112,120 rows), CPU seconds of the whole process, best of 5 (CPU time still varies run to run
# on a busy machine). NIH's file is read from the shared folder: CXR_SHARED (default ../shared,
# beside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/cxr-index
SHARED=${CXR_SHARED:-../shared}
NIH_CSV=$SHARED/data/nih/Data_Entry_2017_v2020.csv.gz
[ -f "$NIH_CSV" ] || { echo "bench/index.sh: no $NIH_CSV: set CXR_SHARED to the folder holding data/ and golden/, or put shared/ beside the repository" >&2; exit 1; }
WORK=${BENCH_DIR:-target/bench}
mkdir -p "$WORK"
[ -f "$WORK/chexpert-train.csv" ] || python3 bench/make_chexpert_train.py "$WORK/chexpert-train.csv"

cpu_seconds() { # best of 5: user+sys CPU seconds and wall seconds
  local best=999 wall=999
  for _ in 1 2 3 4 5; do
    local t
    t=$( { /usr/bin/env time -f "%U %S %e" "$@" >/dev/null; } 2>&1 | tail -1)
    read -r u s e <<<"$t"
    local cpu; cpu=$(echo "$u + $s" | bc)
    if (( $(echo "$cpu < $best" | bc) )); then best=$cpu; wall=$e; fi
  done
  echo "$best $wall"
}

printf '%-44s %10s %10s\n' "cxr-index" "CPU s" "wall s"
read -r c w <<<"$(cpu_seconds $BIN chexpert --csv "$WORK/chexpert-train.csv" --out "$WORK/chexpert.parquet")"
printf '%-44s %10s %10s\n' "CheXpert train.csv (223,414 rows)" "$c" "$w"
read -r c w <<<"$(cpu_seconds $BIN nih --csv "$NIH_CSV" --out "$WORK/nih.parquet")"
printf '%-44s %10s %10s\n' "NIH Data_Entry_2017_v2020.csv.gz (112,120)" "$c" "$w"
