"""Prints the rounds of one model that bench/train.sh or bench/gpu.sh ran, and their ratios.

Each argument is one round: the JSON list `[cxr-train bench --json, bench/train_torch.py or
null]`. Ratios are candle / PyTorch (above 1: candle is faster, or for memory uses more), the
median over the rounds and the ratio of each side's fastest round. Memory is the process's peak
resident memory on the host, also for a GPU run (not the GPU's memory).
"""
import json
import statistics
import sys

# Multiply-adds x 2 of one image's training step (forward, and backward at twice the forward) at
# 224x224, 3 input channels as torchvision counts them; inference is a third. Other sizes scale
# with the pixels.
GFLOP_PER_TRAIN_IMAGE = {"densenet121": 17.2, "resnet50": 24.6}


def memory(phase):
    """Host peak, and the GPU's where the run reported it."""
    gpu = phase.get("peak_gpu_mib")
    host = f"{phase['peak_rss_mib']:7.0f} MiB"
    return host if gpu is None else f"{host} (GPU {gpu:6.0f} MiB)"


def row(r):
    name = r["framework"] + ("" if r.get("precision", "f32") == "f32" else " " + r["precision"])
    parts = ", ".join(f"{part} {s * 1000:.0f} ms" for part, s in r["train"]["parts_s"])
    return (f"{name:<36} train {r['train']['images_per_s']:7.2f} img/s "
            f"{memory(r['train'])} | infer {r['infer']['images_per_s']:7.2f} img/s "
            f"{memory(r['infer'])}" + (f" | step: {parts}" if parts else ""))


def main(runs):
    # A side that failed is null: its rows are missing and no ratio is taken.
    first = next((r for pair in runs for r in pair if r), None)
    if first is None:
        print("no run succeeded")
        return
    where = f"{first['threads']} threads" if first["device"] == "cpu" else f"on {first['device']}"
    print(f"{first['model']} {first['size']}x{first['size']} batch {first['batch']}, "
          f"{where}, {len(runs)} rounds")
    for i, pair in enumerate(runs, 1):
        for r in pair:
            print(f"  round {i}: " + (row(r) if r else "(failed)"))
    if not all(ours and theirs for ours, theirs in runs):
        return

    def ratio(phase, key):
        r = sorted(o[phase][key] / t[phase][key] for o, t in runs)
        spread = f" ({r[0]:.2f}-{r[-1]:.2f})" if len(r) > 1 else ""
        return f"{statistics.median(r):5.2f}x{spread:<12}"
    print(f"  {'candle / pytorch, median of rounds (range)':<44} train {ratio('train', 'images_per_s')}"
          f" memory {ratio('train', 'peak_rss_mib')} | infer {ratio('infer', 'images_per_s')}"
          f" memory {ratio('infer', 'peak_rss_mib')}")

    # The machine's noise only ever slows a run down, so each side's fastest round is the
    # closest to its undisturbed speed: a second estimate, blind to which rounds were paired.
    def best(phase):
        fastest = [max(r[side][phase]['images_per_s'] for r in runs) for side in (0, 1)]
        return f"{fastest[0] / fastest[1]:5.2f}x"
    print(f"  {'candle / pytorch, fastest round of each':<44} train {best('train')}"
          f"{'':<13} | infer {best('infer')}")
    gflop_per_step(runs, first)


def gflop_per_step(runs, first):
    """Achieved GFLOP/s of each side's fastest round, where the model's count is known."""
    per_image = GFLOP_PER_TRAIN_IMAGE.get(first["model"])
    if per_image is None:
        return
    per_image *= (first["size"] / 224) ** 2
    for side in (0, 1):
        name = runs[0][side]["framework"]
        train = max(r[side]["train"]["images_per_s"] for r in runs) * per_image
        infer = max(r[side]["infer"]["images_per_s"] for r in runs) * per_image / 3
        print(f"  {name + ' GFLOP/s, fastest round':<44} train {train:6.1f}{'':<12}"
              f" | infer {infer:6.1f}")


if __name__ == "__main__":
    main([json.loads(r) for r in sys.argv[1:]])
