#!/usr/bin/env python3
"""histoshard's exported models in PyTorch.

``histoshard export --run RUN`` writes ``model.safetensors`` (PyTorch names
and layouts) and ``model.json`` (architecture, preprocessing). ``load_export``
builds the same network and loads the weights:

* ``cnn`` and ``mlp``: the modules below, attribute for attribute the burn
  ones (``blocks.N.conv`` / ``blocks.N.norm``, ``layers.N``, ``head``);
* ``efficientnet`` (Lite0/1/2): ``efficientnet_lite_pytorch.EfficientNet``;
* ``resnet`` (18/50): ``torchvision.models.resnet18`` / ``resnet50``;
* ``mobilenet_v2``: ``torchvision.models.mobilenet_v2``;
* ``inception_v3``: ``torchvision.models.inception_v3`` without the auxiliary
  classifier (histoshard trains none) and with ``transform_input=False``
  (``preprocess`` already normalises to ``(x - 0.5) / 0.5``, which is what
  torchvision's pretrained model computes with ``transform_input=True``).

    import histoshard_torch
    model, info = histoshard_torch.load_export("runs/effnet/export")
    x = histoshard_torch.preprocess(pil_patch, info)   # [1, 3, H, W]
    probabilities = model(x).softmax(1)

As a script it is the reference of ``tests/pretrained.rs``'s export check:

    histoshard_torch.py EXPORT_DIR --input IN.f32 --shape N,3,H,W --out OUT.f32

reads a raw little-endian float32 NCHW batch (already normalised) and writes
the logits, little-endian float32 [N, classes].
"""

import argparse
import json
from pathlib import Path

import torch
from torch import nn


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x):
        return nn.functional.max_pool2d(torch.relu(self.norm(self.conv(x))), 2)


class Cnn(nn.Module):
    """histoshard's ``cnn`` (src/train/models/cnn.rs)."""

    def __init__(self, width, depth, max_width, stem_stride, num_classes, dropout, **_):
        super().__init__()
        blocks, channels = [], 3
        for i in range(depth):
            w = min(width * 2**i, max(max_width, width))
            blocks.append(ConvBlock(channels, w, max(stem_stride, 1) if i == 0 else 1))
            channels = w
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(self.dropout(x.mean(dim=(2, 3))))


class Mlp(nn.Module):
    """histoshard's ``mlp`` (src/train/models/mlp.rs)."""

    def __init__(self, input_size, hidden, num_classes, dropout, standardize=False, **_):
        super().__init__()
        self.standardize = standardize
        widths = [3 * input_size * input_size] + list(hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        if self.standardize:
            # Each patch's channels to mean 0, variance 1 (mlp.rs `standardize`).
            mean = x.mean(dim=(2, 3), keepdim=True)
            var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
            x = (x - mean) / torch.sqrt(var + 1e-5)
        x = x.flatten(1)
        for layer in self.layers:
            x = self.dropout(torch.relu(layer(x)))
        return self.head(x)


def build(spec):
    kind = spec["kind"]
    if kind == "cnn":
        return Cnn(**spec)
    if kind == "mlp":
        return Mlp(**spec)
    if kind == "efficientnet":
        from efficientnet_lite_pytorch import EfficientNet

        variant = "efficientnet-" + spec["variant"]
        # Dynamic SAME padding (any input size), as histoshard computes it.
        return EfficientNet.from_name(
            variant, num_classes=spec["num_classes"], image_size=None, dropout_rate=spec["dropout"]
        )
    if kind == "resnet":
        import torchvision

        return getattr(torchvision.models, f"resnet{spec['depth']}")(num_classes=spec["num_classes"])
    if kind == "mobilenet_v2":
        import torchvision

        return torchvision.models.mobilenet_v2(
            num_classes=spec["num_classes"], dropout=spec["dropout"]
        )
    if kind == "inception_v3":
        import torchvision

        return torchvision.models.inception_v3(
            num_classes=spec["num_classes"],
            dropout=spec["dropout"],
            aux_logits=False,
            transform_input=False,
            init_weights=False,
        )
    raise ValueError(f"unknown model kind {kind!r}")


def load_export(folder):
    """(model in eval mode, model.json as a dict) of an export folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    info = json.loads((folder / "model.json").read_text())
    model = build(info["model"])
    state = load_file(folder / info["weights"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    # BatchNorm's num_batches_tracked is PyTorch bookkeeping burn does not have.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{folder}: missing {missing}, unexpected {unexpected}")
    return model.eval(), info


def preprocess(image, info):
    """A PIL patch → the normalised [1, 3, H, W] tensor the model expects."""
    import numpy as np

    pre = info["preprocessing"]
    side = pre.get("input_size") or pre["patch_size"]
    if image.size != (side, side):
        image = image.resize((side, side), resample=2)  # bilinear
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    mean = torch.tensor(pre["normalization"]["mean"])
    std = torch.tensor(pre["normalization"]["std"])
    return ((x - mean) / std).permute(2, 0, 1).unsqueeze(0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("export", type=Path)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--shape", required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(2)
    shape = [int(v) for v in a.shape.split(",")]
    x = torch.frombuffer(bytearray(a.input.read_bytes()), dtype=torch.float32).reshape(shape)
    model, _ = load_export(a.export)
    with torch.no_grad():
        logits = model(x).contiguous()
    a.out.write_bytes(logits.numpy().astype("<f4").tobytes())


if __name__ == "__main__":
    main()
