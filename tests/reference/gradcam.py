#!/usr/bin/env python3
"""The Grad-CAM golden file: pytorch-grad-cam's GradCAM on the golden tiny models and real images.

Usage: python3 tests/reference/gradcam.py [OUT]
  OUT defaults to crates/cxr-models/tests/data/grad_cam.safetensors, which
  crates/cxr-models/tests/grad_cam.rs holds cxr-models' Grad-CAM to.
Needs torch, torchvision, Pillow, safetensors and the pytorch-grad-cam library
(`pip install grad-cam safetensors`): for this file only. Reads the golden weights of the shared
folder ($CXR_SHARED, default ../shared: golden/models/NAME.safetensors, made by make_golden.py)
and two bundled NIH images (data/nih-demo/images).

The explained layer is the map the classifier pools, as cxr-models defines it: for DenseNet the
features after the final ReLU (a ReLU module of its own here, because torchvision applies that
ReLU in place inside `forward`, where no hook can tell the map from norm5's output), for ResNet
`layer4`'s output. The target is one logit of the 14-output head (ClassifierOutputTarget).

Written, for each model NAME (tiny_densenet, tiny_resnet_basic):
  NAME.target   i64 []          the output explained
  NAME.logits   f32 [2]         its eval-mode logit for each image
  NAME.weights  f32 [2, C]      alpha_k: the library's get_cam_weights (mean gradient per channel)
  NAME.cam      f32 [2, h, w]   ReLU of the library's get_cam_image: sum_k alpha_k A_k, not scaled
  NAME.heatmap  f32 [2, S, S]   what GradCAM(model, [layer])(input, targets) returns
and once, input f32 [2, 1, S, S]: the two images, Pillow LANCZOS from 320 to S px grey, then
(x / 255 - 0.449) / 0.226, the grey ImageNet normalisation cxr-train applies.
"""
import importlib.metadata
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from safetensors.torch import load_file, save_file
from torchvision.models import DenseNet, ResNet
from torchvision.models.resnet import BasicBlock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(ROOT, os.environ.get("CXR_SHARED") or "../shared")
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    ROOT, "crates/cxr-models/tests/data/grad_cam.safetensors")
SIZE = 160  # 5 x 5 feature maps: an odd size, so the resize's half-pixel centres matter
IMAGES = ["00000075_000.png", "00000442_000.png"]  # a PA and an AP film
TARGETS = {"tiny_densenet": 3, "tiny_resnet_basic": 9}


def tiny(name):
    """The golden model as make_golden.py builds it (one input channel, 14 outputs)."""
    if name == "tiny_densenet":
        m = DenseNet(growth_rate=8, block_config=(1, 2, 2, 1), num_init_features=16, bn_size=2,
                     num_classes=14)
        m.features.conv0 = nn.Conv2d(1, 16, 7, 2, 3, bias=False)
    else:
        m = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=14)
        m.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    m.load_state_dict(load_file(os.path.join(SHARED, "golden/models", f"{name}.safetensors")))
    return m.eval()


class PooledMap(nn.Module):
    """torchvision's DenseNet with its final ReLU as a module (not in place): the same logits,
    and a layer whose output is the map the classifier pools."""

    def __init__(self, densenet):
        super().__init__()
        self.net = densenet
        self.relu = nn.ReLU()

    def forward(self, x):
        pooled = F.adaptive_avg_pool2d(self.relu(self.net.features(x)), 1)
        return self.net.classifier(torch.flatten(pooled, 1))


def images():
    grey = []
    for name in IMAGES:
        img = Image.open(os.path.join(ROOT, "data/nih-demo/images", name)).convert("L")
        grey.append(np.asarray(img.resize((SIZE, SIZE), Image.LANCZOS), dtype=np.float32))
    x = torch.from_numpy(np.stack(grey)[:, None])
    return (x / np.float32(255) - np.float32(0.449)) / np.float32(0.226)


def main():
    torch.set_num_threads(2)
    x = images()
    out = {"input": x.contiguous()}
    for name, target in TARGETS.items():
        net = tiny(name)
        if name == "tiny_densenet":
            model = PooledMap(net)
            layer = model.relu
            with torch.no_grad():
                assert torch.allclose(model(x), net(x), atol=1e-6), "the wrapper changed the logits"
        else:
            model, layer = net, net.layer4
        targets = [ClassifierOutputTarget(target)] * len(x)
        cam = GradCAM(model=model, target_layers=[layer])
        heatmap = cam(input_tensor=x, targets=targets)
        acts = cam.activations_and_grads.activations[0].cpu().numpy()
        grads = cam.activations_and_grads.gradients[0].cpu().numpy()
        weights = cam.get_cam_weights(x, layer, targets, acts, grads)
        raw = np.maximum(cam.get_cam_image(x, layer, targets, acts, grads), 0)
        logits = cam.outputs[:, target].detach()
        out.update({
            f"{name}.target": torch.tensor(target, dtype=torch.int64),
            f"{name}.logits": logits.contiguous(),
            f"{name}.weights": torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32)),
            f"{name}.cam": torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)),
            f"{name}.heatmap": torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32)),
        })
        print(f"{name}: target {target}, logits {logits.tolist()}, cam {tuple(raw.shape)} max "
              f"{raw.max():.4g}, heatmap {tuple(heatmap.shape)}")
        cam.activations_and_grads.release()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(out, OUT, metadata={
        "made_by": "tests/reference/gradcam.py",
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "grad_cam": importlib.metadata.version("grad-cam"),
        "images": ",".join(IMAGES), "size": str(SIZE)})
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
