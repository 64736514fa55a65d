#!/usr/bin/env python3
"""Write a CheXpert-small-shaped image folder for a label file: one 390x320 JPEG per row.

CheXpert-v1.0-small holds greyscale baseline JPEGs about 390 wide and 320 high (20-30 kB). This
writes one for every `Path` of a train.csv (as bench/make_chexpert_train.py makes it) under ROOT,
derived from the bundled NIH images (320x320): stretched to 420x340, a per-row crop offset,
mirror, brightness shift and film-grain noise, so that no two files are byte-identical and their
decode cost is that of a real film rather than a smooth upscale. Deterministic (seeded by row);
files already there are kept, so a re-run finishes an interrupted one. Uses Pillow, on all cores.

Usage: make_chexpert_jpegs.py TRAIN_CSV NIH_IMAGE_DIR ROOT
"""
import csv
import multiprocessing
import os
import random
import sys

from PIL import Image, ImageChops, ImageOps

W, H = 390, 320
SOURCES = []


def load_sources(src):
    names = sorted(f for f in os.listdir(src) if f.endswith(".png"))
    if not names:
        sys.exit(f"no PNG files in {src}")
    for name in names:
        base = Image.open(os.path.join(src, name)).convert("L")
        SOURCES.append(base.resize((W + 30, H + 20), Image.BICUBIC))


def write(job):
    row, root, path = job
    out = os.path.join(root, path)
    if os.path.exists(out):
        return 0
    rng = random.Random(row)
    base = SOURCES[row % len(SOURCES)]
    dx, dy = rng.randint(0, 30), rng.randint(0, 20)
    img = base.crop((dx, dy, dx + W, dy + H))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    img = img.point(lambda v, shift=rng.randint(-12, 12): max(0, min(255, v + shift)))
    img = ImageChops.add(img, Image.effect_noise((W, H), 4), scale=1.0, offset=-128)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".tmp"
    img.save(tmp, "JPEG", quality=90)
    os.replace(tmp, out)
    return 1


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    csv_path, src, root = sys.argv[1:]
    with open(csv_path, newline="") as f:
        paths = [r["Path"] for r in csv.DictReader(f)]
    jobs = [(i, root, p) for i, p in enumerate(paths)]
    with multiprocessing.Pool(os.cpu_count(), initializer=load_sources, initargs=(src,)) as pool:
        made = sum(pool.imap_unordered(write, jobs, chunksize=256))
    print(f"{made} JPEGs written, {len(jobs) - made} already there, under {root}", file=sys.stderr)


if __name__ == "__main__":
    main()
