"""The table of bench/parity.sh: per task, both tools' test AUCs per seed, their means, and the
difference of the means (cxr-train minus PyTorch) with a 95% Welch t interval.

Reads lines `TASK TOOL SEED METRICS_JSON` on stdin (TOOL: cxr or torch; the file is cxr-eval
score's metrics.json). A single task's number is its AUC; the findings' is cxr-eval's mean over
the scorable observations (those with enough test positives, as the demo report averages them).
The bar: cxr-train's mean no more than 0.03 below PyTorch's on view and sex.
"""
import json
import math
import statistics
import sys

BAR = 0.03
GATED = ("view", "sex")


def number(path):
    with open(path) as f:
        m = json.load(f)
    means = m.get("means") or []
    if means:
        mean = next((x for x in means if x["name"].startswith("all")), means[0])
        return mean["auc"], f"mean AUC over {', '.join(mean['tasks'])}"
    task = m["tasks"][0]
    return task["auc"], f"{task['task']} AUC ({task['n_pos']} of {task['n']} test images positive)"


def t_quantile(p, df):
    """Student t quantile by bisection on the CDF, integrated numerically (no scipy needed)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x, n=4000):
        h = x / n
        f = [math.exp(log_c - (df + 1) / 2 * math.log1p((i * h) ** 2 / df)) for i in range(n + 1)]
        return 0.5 + h * (sum(f) - (f[0] + f[-1]) / 2)

    lo, hi = 0.0, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def welch(a, b):
    """Difference of means a - b and its 95% Welch interval."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    d = statistics.mean(a) - statistics.mean(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return d, (d, d)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile(0.975, df) * se
    return d, (d - half, d + half)


def main():
    runs, what = {}, {}
    for line in sys.stdin:
        task, tool, seed, path = line.split()
        value, what[task] = number(path)
        runs.setdefault(task, {}).setdefault(tool, []).append((int(seed), value))
    print("| task | cxr-train, per seed | mean | PyTorch, per seed | mean "
          "| cxr-train − PyTorch [95% CI] | within 0.03 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    failed = []
    for task, tools in runs.items():
        a = [v for _, v in sorted(tools.get("cxr", []))]
        b = [v for _, v in sorted(tools.get("torch", []))]
        if len(a) < 2 or len(b) < 2:
            print(f"| {task} | {a} | | {b} | | needs two seeds of each | |")
            continue
        d, (low, high) = welch(a, b)
        ok = statistics.mean(a) >= statistics.mean(b) - BAR
        gate = ("yes" if ok else "**no**") if task in GATED else "(not gated)"
        if task in GATED and not ok:
            failed.append(task)
        print(f"| {task} | {' '.join(f'{v:.3f}' for v in a)} | {statistics.mean(a):.3f} "
              f"| {' '.join(f'{v:.3f}' for v in b)} | {statistics.mean(b):.3f} "
              f"| {d:+.3f} [{low:+.3f}, {high:+.3f}] | {gate} |")
    print()
    for task, text in what.items():
        print(f"- {task}: {text}")
    if failed:
        print(f"\nparity fails on {', '.join(failed)}: cxr-train's mean is more than {BAR} "
              "below PyTorch's")
        sys.exit(1)


if __name__ == "__main__":
    main()
