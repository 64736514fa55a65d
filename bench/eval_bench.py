#!/usr/bin/env python3
"""scikit-learn's side of bench/eval.sh: the AUCs of the same synthetic data that
`cxr-eval bench-auc` generates (crates/cxr-eval/src/bench.rs), timed with roc_auc_score.

Usage: python3 bench/eval_bench.py --rows 1000000 --cols 14 [--seed 0] [--repeat 3] [--pin]
Prints one JSON line: {"rows", "cols", "seconds" (the best of --repeat timings), "auc_sum"}.
"""
import argparse, json, time
import numpy as np
from sklearn.metrics import roc_auc_score

GAMMA = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(z):
    z = z + GAMMA
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def unit(h):
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def column(rows, cols, col, seed):
    with np.errstate(over="ignore"):
        mix_label = splitmix64(np.uint64((seed * 2) % (1 << 64)))
        mix_score = splitmix64(np.uint64((seed * 2 + 1) % (1 << 64)))
        counter = (np.uint64(col) << np.uint64(32)) | np.arange(rows, dtype=np.uint64)
        prevalence = 0.02 + 0.48 * col / (max(cols, 2) - 1)
        labels = unit(splitmix64(counter ^ mix_label)) < prevalence
        scores = (unit(splitmix64(counter ^ mix_score)) * 0.7 + 0.3 * labels).astype(np.float32)
    return labels, scores.astype(np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=14)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--pin", action="store_true", help="print the values pinned in bench.rs")
    a = ap.parse_args()
    if a.pin:
        labels, scores = column(1000, 14, 13, 0)
        print(f"const PINNED_POSITIVES: usize = {labels.sum()};")
        print(f"const PINNED_AUC: f64 = {roc_auc_score(labels, scores)!r};")
        return
    data = [column(a.rows, a.cols, c, a.seed) for c in range(a.cols)]
    seconds = float("inf")
    for _ in range(max(a.repeat, 1)):
        start = time.perf_counter()
        aucs = [roc_auc_score(l, s) for l, s in data]
        seconds = min(seconds, time.perf_counter() - start)
    print(json.dumps({"rows": a.rows, "cols": a.cols, "seconds": seconds, "auc_sum": round(float(sum(aucs)), 12)}))


if __name__ == "__main__":
    main()
