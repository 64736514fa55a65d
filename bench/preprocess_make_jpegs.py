#!/usr/bin/env python3
"""Make CheXpert-sized JPEG chest X-rays for the preprocessing bench.

CheXpert's full-resolution images are greyscale baseline JPEGs of roughly 2500x2000 at quality ~95
(its quantisation tables average 5.8). This writes N such files from the NIH 1024x1024 PNGs:
converted to grey, upscaled (bicubic) to 2500x2000 with a per-image shift and mirror so that no two
files are alike, with Gaussian film-grain noise added so that the entropy-coded size (about 1.5 MB,
like CheXpert's) and hence decode cost are realistic rather than those of a smooth upscaled image.

Usage: preprocess_make_jpegs.py SRC_DIR OUT_DIR [N] [--progressive]
"""
import os
import random
import sys

from PIL import Image, ImageChops, ImageOps

W, H = 2500, 2000


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    progressive = "--progressive" in sys.argv
    if len(args) < 2:
        sys.exit(__doc__)
    src, out = args[0], args[1]
    n = int(args[2]) if len(args) > 2 else 200
    pngs = sorted(os.path.join(src, f) for f in os.listdir(src) if f.endswith(".png"))
    if not pngs:
        sys.exit(f"no PNG files in {src}")
    os.makedirs(out, exist_ok=True)
    rng = random.Random(0)
    for i in range(n):
        path = os.path.join(out, f"bench{i:04d}.jpg")
        if os.path.exists(path):
            continue
        base = Image.open(pngs[i % len(pngs)]).convert("L")
        # A slightly different crop of each source so that repeats are not identical.
        dx, dy = rng.randint(0, 40), rng.randint(0, 40)
        base = base.crop((dx, dy, dx + 984, dy + 984))
        if (i // len(pngs)) % 2:
            base = ImageOps.mirror(base)
        up = base.resize((W, H), Image.BICUBIC)
        noise = Image.effect_noise((W, H), 3)
        img = ImageChops.add(up, noise, scale=1.0, offset=-128)
        tmp = path + ".tmp"
        img.save(tmp, "JPEG", quality=95, progressive=progressive)
        os.replace(tmp, path)


if __name__ == "__main__":
    main()
