#!/usr/bin/env python3
"""Pillow baseline for bench/preprocess.sh: decode + antialiased resize to SIZE x SIZE.

What a typical Python pipeline does, done the way cxr-preprocess does it: open, convert to 8-bit
grey (ITU-R 601 luma), shorter side to SIZE with Lanczos and the centre square kept (Pillow's
`resize(box=...)` crops and resizes in one antialiased step), over PROCS worker processes.

--draft lets Pillow's JPEG decoder (libjpeg-turbo) decode at 1/2, 1/4 or 1/8 scale first, as
small as still covers SIZE: faster, at a lower quality margin than cxr-preprocess keeps (>= 2x).

Usage: pillow_baseline.py LIST_FILE [--size 224] [--procs 2] [--draft]
LIST_FILE holds one image path a line (repeats allowed). Prints one line: images, seconds,
images/s.
"""
import argparse
import multiprocessing
import time

from PIL import Image

SIZE = 224
DRAFT = False


def work(path: str) -> int:
    im = Image.open(path)
    if DRAFT:
        im.draft("L", (SIZE, SIZE))
    im = im.convert("L")
    w, h = im.size
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    out = im.resize((SIZE, SIZE), Image.LANCZOS, box=box)
    return len(out.tobytes())


def init(size: int, draft: bool) -> None:
    global SIZE, DRAFT
    SIZE, DRAFT = size, draft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("list_file")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--draft", action="store_true")
    args = parser.parse_args()
    with open(args.list_file) as f:
        paths = [line.strip() for line in f if line.strip()]
    start = time.perf_counter()
    with multiprocessing.Pool(args.procs, initializer=init, initargs=(args.size, args.draft)) as pool:
        done = sum(1 for _ in pool.imap_unordered(work, paths, chunksize=4))
    seconds = time.perf_counter() - start
    print(f"{done} images in {seconds:.2f} s: {done / seconds:.1f} images/s")


if __name__ == "__main__":
    main()
