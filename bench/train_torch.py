"""PyTorch side of `bench/train.sh`: the step `cxr-train bench` times, in torchvision.

A training step is a train-mode forward, BCE-with-logits over 14 outputs, the backward and an
Adam update (gradients set to None, as PyTorch's zero_grad does by default); inference is an
eval-mode forward under no_grad. Inputs have one channel (grey X-rays): the stem convolution is
replaced by a one-channel one, as cxr's models have. On a GPU (`--device cuda:0`, for
bench/gpu.sh) each step waits for the device before its time is taken, as cxr-train's does, and
the GPU's peak memory (PyTorch's allocator, `max_memory_allocated`) is reported too;
`--channels-last --bf16` trains as people do on GPUs today (NHWC tensors, bf16 autocast).
Prints one JSON object shaped like `cxr-train bench --json`.
"""
import argparse
import json
import time

import torch
import torchvision


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def build(name, in_channels):
    model = getattr(torchvision.models, name)(num_classes=14)
    if name.startswith("densenet"):
        old = model.features.conv0
        model.features.conv0 = torch.nn.Conv2d(in_channels, old.out_channels, 7, 2, 3, bias=False)
    else:
        model.conv1 = torch.nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return model


def reset_peak_gpu(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gpu_mib(device):
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def phase(step, batch, steps, warmup, device):
    reset_peak_gpu(device)
    times = []
    for i in range(warmup + max(steps, 1)):
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return {
        "images_per_s": batch / min(times),
        "mean_images_per_s": batch * len(times) / sum(times),
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": peak_gpu_mib(device),
        "parts_s": [],
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="densenet121")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="0: torch's default")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    a = p.parse_args()
    memory_format = torch.channels_last if a.channels_last else torch.contiguous_format
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = build(a.model, a.in_channels).to(device, memory_format=memory_format)
    x = torch.randn(a.batch, a.in_channels, a.size, a.size, device=device)
    x = x.contiguous(memory_format=memory_format)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.bf16)
    targets = (torch.rand(a.batch, 14, device=device) >= 0.5).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def train_step():
        model.train()
        optimizer.zero_grad()
        with autocast():
            loss = loss_fn(model(x).float(), targets)
        loss.backward()
        optimizer.step()

    def infer_step():
        model.eval()
        with torch.no_grad(), autocast():
            model(x).float().tolist()

    variant = "".join([" channels_last" if a.channels_last else "", " bf16" if a.bf16 else ""])
    reset_peak_rss()
    train = phase(train_step, a.batch, a.steps, a.warmup, device)
    reset_peak_rss()
    infer = phase(infer_step, a.batch, a.steps, a.warmup, device)
    print(json.dumps({
        "framework": "pytorch " + torch.__version__ + variant,
        "model": a.model, "size": a.size, "batch": a.batch, "in_channels": a.in_channels,
        "device": device.type, "threads": torch.get_num_threads(), "steps": a.steps,
        "train": train, "infer": infer,
    }))


if __name__ == "__main__":
    main()
