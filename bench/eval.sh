#!/usr/bin/env bash
# cxr-eval's speed: ROC AUC of COLS x ROWS scores (default 14 x 1,000,000) side by side with
# scikit-learn's roc_auc_score on the same numbers, and 2,000 patient-bootstrap replicates of
# CheXpert's validation size (234 x 14). Whole processes are timed as well as the computation
# itself (data generation excluded), and both sides print the sum of their AUCs to show that they
# scored the same data.
#
# Each side reports the best of REPEAT timings of the computation (the machine is shared).
#
# Usage: bench/eval.sh            (ROWS, COLS, SEED, REPLICATES, REPEAT override the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C # EPOCHREALTIME with a decimal point

ROWS=${ROWS:-1000000}
COLS=${COLS:-14}
SEED=${SEED:-0}
REPLICATES=${REPLICATES:-2000}
REPEAT=${REPEAT:-3}

# The whole workspace at once: a per-package build re-resolves features and rebuilds shared crates.
cargo build --release --quiet --workspace
BIN="${CARGO_TARGET_DIR:-target}/release/cxr-eval"

if ! python3 -c 'import numpy, sklearn' 2>/dev/null; then
    echo "installing numpy and scikit-learn for the comparison..." >&2
    python3 -m pip install --quiet numpy scikit-learn
fi

t0=$EPOCHREALTIME
rust=$("$BIN" bench-auc --rows "$ROWS" --cols "$COLS" --seed "$SEED" --repeat "$REPEAT")
t1=$EPOCHREALTIME
py=$(python3 bench/eval_bench.py --rows "$ROWS" --cols "$COLS" --seed "$SEED" --repeat "$REPEAT")
t2=$EPOCHREALTIME
boot=$("$BIN" bench-bootstrap --rows 234 --cols 14 --replicates "$REPLICATES" --seed "$SEED")
t3=$EPOCHREALTIME

python3 - "$rust" "$py" "$boot" "$t0" "$t1" "$t2" "$t3" "$REPEAT" <<'PY'
import json, sys
rust, py, boot = (json.loads(a) for a in sys.argv[1:4])
t0, t1, t2, t3 = map(float, sys.argv[4:8])
same = abs(rust["auc_sum"] - py["auc_sum"]) < 1e-9
print(f"ROC AUC, {rust['cols']} columns x {rust['rows']:,} rows (same data on both sides: "
      f"AUC sums {rust['auc_sum']:.12f} / {py['auc_sum']:.12f}{'' if same else '  MISMATCH'})")
print(f"  {'':24}{'computation':>12}{'whole process':>16}   (computation: best of {sys.argv[8]})")
print(f"  {'cxr-eval (release)':24}{rust['seconds']:>11.3f}s{t1 - t0:>15.3f}s")
print(f"  {'scikit-learn':24}{py['seconds']:>11.3f}s{t2 - t1:>15.3f}s")
print(f"  {'ratio':24}{py['seconds'] / rust['seconds']:>11.1f}x{(t2 - t1) / (t1 - t0):>15.1f}x")
print(f"patient bootstrap, {boot['replicates']} replicates of {boot['rows']} x {boot['cols']}: "
      f"{boot['seconds']:.3f}s computation, {t3 - t2:.3f}s whole process")
sys.exit(0 if same else 1)
PY
