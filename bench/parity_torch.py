"""PyTorch side of `bench/parity.sh`: one `cxr-train fit` run, written in torchvision.

Takes the flags cxr-train fit was given (the subset a parity run uses; any other flag is refused,
so a recipe this script cannot mirror fails loudly instead of comparing different things) and
trains the same model the same way on the same images:

- data: the images of cxr-preprocess's shards, the labels and patient split of cxr-index's
  manifest (read with pyarrow), targets as cxr-train makes them (view: PA 1, AP 0; sex: male 1,
  female 0; findings: U-Ignore, blank counted negative), grey scaled to 0..1 and normalised with
  ImageNet's grey statistics (0.449, 0.226);
- model: torchvision's ResNet/DenseNet with a one-channel stem, initialised by torchvision's
  own scheme (the stem re-drawn by the same rule as the convolution it replaces);
- training: Adam with L2 weight decay, cxr-train's learning-rate schedules, batches drawn
  without replacement each epoch (the last partial batch dropped), random horizontal flip and
  zero-padded shift (`--crop pad:N`, torchvision's RandomCrop with padding);
- selection: validation AUC (mean over the head's columns) at cxr-train's validation steps,
  and the test split predicted with the best model.

Writes RUN/metrics.jsonl (cxr's run-log format, so `cxr-eval curves` draws both tools' curves
on one figure) and the test predictions as CSV, which `cxr-eval score` reads.
"""
import argparse
import json
import math
import os
import random

import numpy as np
import pyarrow.parquet as pq
import torch
import torchvision

NIH_14 = ["Atelectasis", "Cardiomegaly", "Pleural Effusion", "Infiltration", "Mass", "Nodule",
          "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
          "Pleural Thickening", "Hernia"]
GREY_MEAN, GREY_STD = 0.449, 0.226


def cxr_train_flags():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--shards", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--predictions", required=True, help="test predictions CSV to write")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", default="pathologies", choices=["pathologies", "sex", "view"])
    p.add_argument("--arch", default="densenet121")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine"])
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--min-lr", type=float, default=0.0)
    p.add_argument("--hflip", action="store_true")
    p.add_argument("--crop", default="none")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--init", default="random", choices=["random"],
                   help="torchvision's initialisation (the pipelines' demo default)")
    return p


def read_shards(directory):
    """Images (u8 [N, S, S]) and manifest row positions of every shard in index.json."""
    with open(os.path.join(directory, "index.json")) as f:
        index = json.load(f)
    images, rows = [], []
    for shard in index["shards"]:
        with open(os.path.join(directory, shard["file"]), "rb") as f:
            data = f.read()
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        base = 8 + n

        def tensor(name, dtype):
            t = header[name]
            start, end = t["data_offsets"]
            return np.frombuffer(data[base + start:base + end], dtype=dtype).reshape(t["shape"])

        images.append(tensor("images", np.uint8)[:, 0])
        rows.append(tensor("rows", np.int64))
    return np.concatenate(images), np.concatenate(rows)


def targets(table, task):
    """Per manifest row: target values, mask (1 = counts) and the predictions' column names."""
    if task == "view":
        proj = table["projection"]
        return (np.array([[p == "PA"] for p in proj], np.float32),
                np.array([[p in ("PA", "AP")] for p in proj], np.float32), ["view"])
    if task == "sex":
        sex = table["sex"]
        return (np.array([[s == "male"] for s in sex], np.float32),
                np.array([[s in ("male", "female")] for s in sex], np.float32), ["sex"])
    # U-Ignore: uncertain (-1) masked; blank (None) counted negative.
    states = np.array([[-2 if v is None else v for v in table[c]] for c in NIH_14]).T
    return ((states == 1).astype(np.float32), (states != -1).astype(np.float32), NIH_14)


def build(arch, outputs):
    model = getattr(torchvision.models, arch)(num_classes=outputs)
    if arch.startswith("densenet"):
        model.features.conv0 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        torch.nn.init.kaiming_normal_(model.features.conv0.weight)
    else:
        model.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        torch.nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def learning_rate(args, step, total):
    if args.schedule == "constant":
        return args.lr
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    span = max(total - args.warmup_steps, 1)
    t = min((step - args.warmup_steps) / span, 1.0)
    return args.min_lr + (args.lr - args.min_lr) * 0.5 * (1 + math.cos(math.pi * t))


def augment(batch, args, rng):
    """Zero-padded random shift and horizontal flip, per image, on u8 [B, S, S]."""
    out = batch.copy()
    pad = int(args.crop.split(":")[1]) if args.crop.startswith("pad:") else 0
    if args.crop not in ("none",) and not args.crop.startswith("pad:"):
        raise SystemExit(f"parity_torch.py mirrors --crop none and pad:N only, not {args.crop}")
    size = batch.shape[1]
    for i in range(len(batch)):
        img = batch[i]
        if pad:
            padded = np.pad(img, pad)
            y, x = rng.randint(0, 2 * pad), rng.randint(0, 2 * pad)
            img = padded[y:y + size, x:x + size]
        if args.hflip and rng.random() < 0.5:
            img = img[:, ::-1]
        out[i] = img
    return out


def to_input(batch):
    x = torch.from_numpy(np.ascontiguousarray(batch)).float().div_(255.0)
    return ((x - GREY_MEAN) / GREY_STD).unsqueeze(1)


def masked_bce(logits, y, m):
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (loss * m).sum() / m.sum().clamp(min=1.0)


def auc(labels, scores):
    """ROC AUC with ties counted half (Mann-Whitney); None with one class only."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return (ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def infer(model, images, batch_size):
    model.eval()
    with torch.no_grad():
        return torch.cat([model(to_input(images[i:i + batch_size]))
                          for i in range(0, len(images), batch_size)])


def validate(model, images, y, m, columns, batch_size):
    logits = infer(model, images, batch_size)
    loss = masked_bce(logits, torch.from_numpy(y), torch.from_numpy(m)).item()
    scores = logits.numpy()
    aucs = {}
    for k, c in enumerate(columns):
        known = m[:, k] == 1
        aucs[c] = auc(y[known, k], scores[known, k])
    return loss, aucs


def main():
    args = cxr_train_flags().parse_args()
    if args.device != "cpu":
        raise SystemExit("parity runs on the CPU: --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    table = pq.read_table(args.manifest).to_pydict()
    images, rows = read_shards(args.shards)
    y_all, m_all, columns = targets(table, args.task)
    split = np.array([table["split"][r] for r in rows])
    y, m = y_all[rows], m_all[rows]
    # Images without a known target for this task are left out, as cxr-train does.
    usable = m.sum(axis=1) > 0
    part = {s: np.flatnonzero((split == s) & usable) for s in ("train", "valid", "test")}
    train = part["train"]

    model = build(args.arch, len(columns))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    per_epoch = len(train) // args.batch_size
    total = per_epoch * args.epochs
    os.makedirs(args.run_dir, exist_ok=True)
    log = open(os.path.join(args.run_dir, "metrics.jsonl"), "w")
    best, best_state = None, None
    losses = []
    for epoch in range(args.epochs):
        order = train[torch.randperm(len(train)).numpy()]
        for b in range(per_epoch):
            step = epoch * per_epoch + b
            lr = learning_rate(args, step, total)
            for g in optimizer.param_groups:
                g["lr"] = lr
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            model.train()
            logits = model(to_input(augment(images[idx], args, rng)))
            loss = masked_bce(logits, torch.from_numpy(y[idx]), torch.from_numpy(m[idx]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            done = step + 1
            epoch_f = done * args.batch_size / len(train)
            if done % args.log_every == 0:
                log.write(json.dumps({"step": done, "epoch": epoch_f, "phase": "train",
                                      "loss": sum(losses) / len(losses), "lr": lr}) + "\n")
                losses = []
            epoch_end = done % per_epoch == 0
            if epoch_end or (args.eval_every and done % args.eval_every == 0):
                v = part["valid"]
                vloss, aucs = validate(model, images[v], y[v], m[v], columns, args.batch_size)
                log.write(json.dumps({"step": done, "epoch": epoch_f, "phase": "valid",
                                      "loss": vloss, "lr": lr, "auc": aucs}) + "\n")
                log.flush()
                defined = [a for a in aucs.values() if a is not None]
                value = sum(defined) / len(defined) if defined else None
                if value is not None and (best is None or value > best):
                    best = value
                    best_state = {k: t.clone() for k, t in model.state_dict().items()}
    log.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    t = part["test"]
    scores = torch.sigmoid(infer(model, images[t], args.batch_size)).numpy()
    with open(args.predictions + ".tmp", "w") as f:
        f.write(",".join(["image_id"] + [f'"{c}"' for c in columns]) + "\n")
        for i, r in enumerate(rows[t]):
            f.write(",".join([table["image_id"][r]] + [repr(float(s)) for s in scores[i]]) + "\n")
    os.replace(args.predictions + ".tmp", args.predictions)


if __name__ == "__main__":
    main()
