#!/usr/bin/env python3
"""Independent numbers for cxr-eval's tests (crates/cxr-eval/tests/independent_checks.rs), with
numpy, scipy and scikit-learn rather than cxr-eval's own code paths:

- DeLong's paired test by the O(m n) placement matrix of DeLong et al. (1988) (cxr-eval uses the
  midrank form of Sun & Xu, 2014), p-value from scipy.stats.norm;
- the patient bootstrap: the same SplitMix64 draws re-implemented here, each replicate's AUC by
  sklearn.metrics.roc_auc_score with sample weights, the interval by numpy.percentile;
- the draws of two pinned replicates and the synthetic benchmark data's pinned values.

Run: python3 tests/reference/eval_check.py   (needs numpy, scipy, scikit-learn). Prints the Rust
constants of independent_checks.rs.
"""
import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15


def splitmix64(z):
    z = (z + GAMMA) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def seeded_hash(seed, data):
    h = 0xCBF29CE484222325 ^ ((seed * GAMMA) & M64)
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & M64
    return splitmix64(h)


def unit_weights(unit_patient, n_patients, seed, replicate):
    state = seeded_hash(seed, replicate.to_bytes(8, "little"))
    counts = [0] * n_patients
    for _ in range(n_patients):
        out = splitmix64(state)
        state = (state + GAMMA) & M64
        counts[(out * n_patients) >> 64] += 1
    return [counts[p] for p in unit_patient]


# The check data set: 60 units of 25 patients, two tasks, models A and B (ties on purpose).
N, P = 60, 25
unit_patient = [i * P // N for i in range(N)]
lab1 = np.array([(i * 7) % 5 < 2 for i in range(N)])
lab2 = np.array([(i * 3) % 4 == 0 for i in range(N)])
a1 = np.array([((i * 13) % 17) / 17.0 + (0.25 if lab1[i] else 0.0) for i in range(N)])
a2 = np.array([((i * 11) % 23) / 23.0 + (0.15 if lab2[i] else 0.0) for i in range(N)])
b1 = np.array([((i * 5) % 19) / 19.0 + (0.2 if lab1[i] else 0.0) for i in range(N)])
b2 = np.array([((i * 11) % 23) / 23.0 + (0.05 if lab2[i] else 0.0) for i in range(N)])


def delong_matrix(labels, x, y):
    def comps(s):
        pos, neg = s[labels], s[~labels]
        k = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return k.mean(), k.mean(axis=1), k.mean(axis=0)
    ax, v10x, v01x = comps(x)
    ay, v10y, v01y = comps(y)
    m, n = labels.sum(), (~labels).sum()
    s = np.cov(np.vstack([v10x, v10y])) / m + np.cov(np.vstack([v01x, v01y])) / n
    z = (ax - ay) / np.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    return ax, ay, s[0, 0], s[1, 1], s[0, 1], z, 2 * norm.sf(abs(z))


def show(name, value):
    print(f"const {name}: f64 = {float(value)!r};")


d = delong_matrix(lab1, a1, b1)
for name, v in zip(["AUC_A", "AUC_B", "VAR_A", "VAR_B", "COV", "Z", "P"], d):
    show("DELONG_" + name, v)
assert abs(d[0] - roc_auc_score(lab1, a1)) < 1e-15

B, SEED = 2000, 42
reps = {k: [] for k in ["a1", "a2", "b1", "b2"]}
for r in range(B):
    w = np.array(unit_weights(unit_patient, P, SEED, r), dtype=float)
    for k, lab, s in [("a1", lab1, a1), ("a2", lab2, a2), ("b1", lab1, b1), ("b2", lab2, b2)]:
        keep = w > 0
        l, sc, ww = lab[keep], s[keep], w[keep]
        reps[k].append(roc_auc_score(l, sc, sample_weight=ww) if 0 < l.sum() < len(l) else np.nan)
reps = {k: np.array(v) for k, v in reps.items()}
ok = ~np.isnan(reps["a1"])
lo, hi = np.percentile(reps["a1"][ok], [2.5, 97.5])
show("BOOT_A1_LOW", lo)
show("BOOT_A1_HIGH", hi)
print(f"const BOOT_A1_USED: usize = {ok.sum()};")
both = ok & ~np.isnan(reps["a2"])
diff = (reps["a1"] + reps["a2"]) / 2 - (reps["b1"] + reps["b2"]) / 2
diff = diff[both]
lo, hi = np.percentile(diff, [2.5, 97.5])
show("BOOT_MEAN_DIFF_LOW", lo)
show("BOOT_MEAN_DIFF_HIGH", hi)
p = min(1.0, 2 * (1 + min((diff <= 0).sum(), (diff >= 0).sum())) / (len(diff) + 1))
show("BOOT_MEAN_DIFF_P", p)
print(f"const BOOT_MEAN_DIFF_USED: usize = {len(diff)};")
print("const PINNED_SEED0_REP0: [u32; 5] =", unit_weights(list(range(5)), 5, 0, 0), ";")
print("const PINNED_SEED42_REP1999: [u32; 5] =", unit_weights(list(range(5)), 5, 42, 1999), ";")
