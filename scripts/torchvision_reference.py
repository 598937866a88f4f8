#!/usr/bin/env python3
"""torchvision's ResNet as the reference of histoshard's (tests/pretrained.rs).

No ImageNet ResNet weights ship in a registry package, so the check uses a
seeded random network: every weight *and* every batch-norm running statistic
is drawn at random (so a statistic loaded into the wrong place shows), saved
with ``torch.save`` (the zip format torchvision's own files use), then run in
``eval()`` on the given input::

    torchvision_reference.py --arch resnet18 --weights OUT.pth \\
        --input IN.f32 --shape N,3,H,W --out LOGITS.f32

The input and output are raw little-endian float32 (NCHW in, [N, 1000] out).
"""

import argparse
from pathlib import Path

import torch
import torchvision


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=["resnet18", "resnet50"], required=True)
    p.add_argument("--weights", type=Path, required=True, help="where to save the state dict")
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--shape", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    model = getattr(torchvision.models, a.arch)(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    torch.save(model.state_dict(), a.weights)
    shape = [int(v) for v in a.shape.split(",")]
    x = torch.frombuffer(bytearray(a.input.read_bytes()), dtype=torch.float32).reshape(shape)
    with torch.no_grad():
        logits = model(x).contiguous()
    a.out.write_bytes(logits.numpy().astype("<f4").tobytes())


if __name__ == "__main__":
    main()
