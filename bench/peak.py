"""The machine's measured f32 peak: GFLOP/s of a large matrix product in PyTorch (MKL/oneDNN).

bench/train.sh prints it beside each model's achieved GFLOP/s, so a training step's speed reads
as a fraction of what the cores can do, not only as a ratio to PyTorch's own step.
Usage: python3 bench/peak.py THREADS   (prints one number, the best of 5 products)
"""
import sys
import time

import torch


def main(threads):
    torch.set_num_threads(threads)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = 0.0
    for _ in range(6):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    print(f"{best:.0f}")


if __name__ == "__main__":
    main(int(sys.argv[1]))
