#!/usr/bin/env python3
"""Load a cxr DenseNet121 checkpoint into torchvision and compare logits.

Usage: python3 tests/reference/torch_interop.py DIR   (DIR written by
`cargo run --release -p cxr-models --example torch_interop -- DIR`). Needs torch, torchvision,
safetensors: for this check only.
"""
import sys

import torch
import torchvision
from safetensors.torch import load_file

d = sys.argv[1]
state = load_file(f"{d}/densenet121.safetensors")
model = torchvision.models.densenet121(num_classes=14)
print("load_state_dict:", model.load_state_dict(state, strict=True))
model.eval()
io = load_file(f"{d}/io.safetensors")
with torch.no_grad():
    ours = io["logits"]
    theirs = model(io["input"])
diff = (ours - theirs).abs().max().item()
print(f"max |cxr - torchvision| over {tuple(theirs.shape)} logits: {diff:.3e}")
sys.exit(0 if diff < 1e-4 else 1)
