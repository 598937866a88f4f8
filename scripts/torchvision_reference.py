#!/usr/bin/env python3
"""torchvision's ResNet-18/50, MobileNetV2 and Inception-v3 as the reference
of histoshard's (tests/pretrained.rs).

No ImageNet weights for these ship in a registry package, so the check uses a
seeded random network: every weight *and* every batch-norm running statistic
is drawn at random (so a statistic loaded into the wrong place shows), saved
with ``torch.save`` (the zip format torchvision's own files use), then run in
``eval()`` on the given input::

    torchvision_reference.py --arch resnet18 --weights OUT.pth \\
        --input IN.f32 --shape N,3,H,W --out LOGITS.f32

The input and output are raw little-endian float32 (NCHW in, [N, 1000] out).

Inception-v3 is built like torchvision's pretrained one (``aux_logits=True``,
``init_weights=True``), so the saved state dict has every tensor of the real
file, ``AuxLogits.*`` included. Its ``transform_input`` is off unless
``--transform-input`` is given: histoshard's network has no such step (its
preprocessing normalises to what the step computes), so the like-for-like
comparison runs both without it, on the same input.
"""

import argparse
from pathlib import Path

import torch
import torchvision


def calibrate_batch_norms(model):
    """Inception's running statistics: measured on seeded noise at 299²,
    then jittered per channel (mean ± 0.05 σ, variance × U(0.95, 1.05)).

    They stay random and different in every channel, so a statistic loaded
    into the wrong place still shows, but every layer stays about
    normalised: with the independent draws used for the other networks,
    Inception's ~95 layers (and ``init_weights``' std-0.1 convolutions)
    compound to logits of 10¹¹, where no tolerance means anything. Measured
    without ``transform_input``, so both settings share one state dict, and
    without the auxiliary classifier, which is not part of the compared
    forward and keeps the plain draws (its tensors are in the file, for the
    loader to skip).
    """
    norms = [
        m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d) and not name.startswith("AuxLogits")
    ]
    transform, model.transform_input = model.transform_input, False
    aux, model.AuxLogits = model.AuxLogits, None
    with torch.no_grad():
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: after one batch, its statistics
        model.train()
        model(torch.randn(2, 3, 299, 299))
        for m in norms:
            m.momentum = 0.1
            std = m.running_var.sqrt()
            m.running_mean.add_(torch.empty_like(std).uniform_(-0.05, 0.05) * std)
            m.running_var.mul_(torch.empty_like(std).uniform_(0.95, 1.05))
    model.transform_input, model.AuxLogits = transform, aux


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--arch", choices=["resnet18", "resnet50", "mobilenet_v2", "inception_v3"], required=True
    )
    p.add_argument("--weights", type=Path, required=True, help="where to save the state dict")
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--shape", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--transform-input",
        action="store_true",
        help="inception_v3: torchvision's transform_input=True (the pretrained model's setting)",
    )
    a = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    if a.arch == "inception_v3":
        model = torchvision.models.inception_v3(
            weights=None, aux_logits=True, init_weights=True, transform_input=a.transform_input
        )
    else:
        model = getattr(torchvision.models, a.arch)(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    shape = [int(v) for v in a.shape.split(",")]
    x = torch.frombuffer(bytearray(a.input.read_bytes()), dtype=torch.float32).reshape(shape)
    if a.arch == "inception_v3":
        calibrate_batch_norms(model)
    model.eval()
    torch.save(model.state_dict(), a.weights)
    with torch.no_grad():
        logits = model(x).contiguous()
    a.out.write_bytes(logits.numpy().astype("<f4").tobytes())


if __name__ == "__main__":
    main()
