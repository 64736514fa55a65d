#!/usr/bin/env python3
"""The whole study's training runs and their estimated GPU hours, from the pipelines' own plans.

Reads `make -n` of every real-data pipeline (CHEXPERT and NIH set; nothing runs), keeps each
`cxr-train fit` and `pretrain` once per distinct command without its --run-dir (the run store
trains a run once however many experiments ask for it), and estimates its GPU time from the
images it sees: epochs x the training split (CheXpert: 80% of 223,414 images, all views;
NIH: 90% of 112,120), a validation pass over the valid split per epoch, and the predictions of
the official and held-out sets. Images/s are cxr-train's on one H200 (cuDNN, f32, batch 64,
measured 2026-12-04, README "On a GPU"); ResNet152's were not measured and are ResNet50's scaled
by their FLOPs (4.1 / 11.6 GFLOPs); a Barlow Twins pair costs two training images plus the
projector, counted as 2.2. Usage: bench/study-cost.py [--json]
"""
import json
import re
import subprocess
import sys

PIPELINES = ["easy", "policy", "weight-decay", "aux", "architecture", "dam", "pretraining"]
TRAIN_IMAGES = {"chexpert": 0.8 * 223_414, "nih": 0.9 * 112_120}
VALID_IMAGES = {"chexpert": 0.1 * 223_414, "nih": 0.1 * 112_120}
PREDICT_IMAGES = 234 + 0.1 * 223_414
# (train, inference) images/s on one H200.
RATE = {"densenet121": (359, 2817), "resnet50": (503, 3494)}
RATE["resnet152"] = tuple(r * 4.1 / 11.6 for r in RATE["resnet50"])
BARLOW_PAIR = 2.2


def plan(pipeline):
    out = subprocess.run(
        ["make", "-n", "-f", f"pipelines/{pipeline}.mk", "CHEXPERT=/data/chexpert", "NIH=/data/nih",
         "OUT=/tmp/study-cost", "BIN=cxr"],
        capture_output=True, text=True, check=True).stdout
    return re.sub(r"\\\n", " ", out).splitlines()


def flag(cmd, name, default=None):
    m = re.search(rf"--{name} (\S+)", cmd)
    return m.group(1) if m else default


def hours(cmd):
    arch = flag(cmd, "arch")
    train_rate, infer_rate = RATE[arch]
    data = "nih" if "nih" in flag(cmd, "manifest") else "chexpert"
    epochs = float(flag(cmd, "epochs"))
    if " pretrain " in cmd:
        return epochs * TRAIN_IMAGES[data] * BARLOW_PAIR / train_rate / 3600
    seconds = epochs * (TRAIN_IMAGES[data] / train_rate + VALID_IMAGES[data] / infer_rate)
    return (seconds + PREDICT_IMAGES / infer_rate) / 3600


def main():
    runs = {}  # command without --run-dir -> (pipelines asking for it)
    for p in PIPELINES:
        for line in plan(p):
            m = re.search(r"cxr-train (fit|pretrain) .*", line)
            if m:
                cmd = " " + re.sub(r"--run-dir \S+ ", "", re.sub(r"\s+", " ", m.group(0))) + " "
                runs.setdefault(cmd, set()).add(p)
    rows = []
    for p in PIPELINES:
        mine = [c for c, ps in runs.items() if p in ps]
        rows.append({"pipeline": p, "runs": len(mine), "gpu_hours": sum(map(hours, mine))})
    total = {"pipeline": "study (runs shared once)", "runs": len(runs),
             "gpu_hours": sum(map(hours, runs))}
    if "--json" in sys.argv:
        print(json.dumps(rows + [total], indent=1))
        return
    print(f"{'pipeline':<26}{'runs':>6}{'H200 hours':>12}")
    for r in rows + [total]:
        print(f"{r['pipeline']:<26}{r['runs']:>6}{r['gpu_hours']:>12.1f}")


if __name__ == "__main__":
    main()
