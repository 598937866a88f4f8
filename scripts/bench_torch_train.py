#!/usr/bin/env python3
"""PyTorch eager training-step benchmark: the baseline for histoshard's
``train`` benchmark (the same networks, batch and image size, in PyTorch).

Models:

* ``cnn`` mirrors histoshard's ``cnn`` (src/train/models/cnn.rs) exactly:
  ``--depth`` blocks of conv 3×3 (padding 1, no bias; the first with stride
  ``--stem-stride``) → BatchNorm2d → ReLU → MaxPool2d(2), channels starting at
  ``--width`` and doubling each block, capped at ``--max-width``; then
  AdaptiveAvgPool2d(1) → flatten → Dropout(0.2) → Linear(C, 2).
* ``efficientnet-lite0``: ``efficientnet_lite_pytorch``'s
  ``EfficientNet.from_name('efficientnet-lite0', num_classes=2)`` (random
  weights; built for ``--size`` so its static SAME padding fits; its
  drop-connect is active in training, as in the package).

One step: forward in train mode, cross-entropy, backward, Adam (lr 1e-3).
The inputs are one random batch (seed 0: normal pixels, labels in {0, 1})
made on the device before timing. ``--warmup`` steps run first untimed; then
``--steps`` steps are timed (CUDA synchronised before the clock stops).

Prints one JSON line:
``{"model", "device", "threads", "batch", "size", "steps", "img_per_s",
"ms_per_step", "cores_used" (process CPU time / wall), "torch_version"}``.

``--profile`` then runs ``--steps`` more steps under ``torch.profiler`` and
prints a second line: their self CPU time grouped into operations by
``scripts/op_profile.py`` (``scripts/profile_train.sh`` runs both sides).

    python scripts/bench_torch_train.py                       # cnn, batch 32, 224², 2 threads
    python scripts/bench_torch_train.py --model efficientnet-lite0 --batch-size 16 --steps 5
    python scripts/bench_torch_train.py --device cuda

Needs torch (and efficientnet_lite_pytorch for that model):
``scripts/setup_torch_venv.sh`` makes the venv.
"""

import argparse
import json
import time

import torch
from torch import nn


def cnn(width=32, depth=4, max_width=256, stem_stride=1, num_classes=2, dropout=0.2):
    """histoshard's ``cnn`` in PyTorch (module for module)."""
    layers, channels = [], 3
    for i in range(depth):
        w = min(width * 2 ** i, max(max_width, width))
        stride = max(stem_stride, 1) if i == 0 else 1
        layers += [
            nn.Conv2d(channels, w, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        channels = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def efficientnet_lite0(size, num_classes=2):
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes, image_size=size)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["cnn", "efficientnet-lite0"], default="cnn")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=224, help="image side (default 224)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--width", type=int, default=32, help="cnn: channels of the first block")
    p.add_argument("--depth", type=int, default=4, help="cnn: number of blocks")
    p.add_argument("--max-width", type=int, default=256, help="cnn: channel cap")
    p.add_argument("--stem-stride", type=int, default=1, help="cnn: stride of the first conv")
    p.add_argument("--channels-last", action="store_true",
                   help="model and input in channels-last memory format (what "
                        "glas_torch_reference.py's tiles end up in: NHWC arrays, permuted)")
    p.add_argument("--profile", action="store_true",
                   help="then profile --steps more steps, grouped by operation (second JSON line)")
    a = p.parse_args()
    if a.steps < 1 or a.batch_size < 1 or a.size < 1 or a.warmup < 0:
        p.error("--steps, --batch-size and --size must be positive, --warmup not negative")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device")

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device = torch.device(a.device)
    if a.model == "cnn":
        model = cnn(a.width, a.depth, a.max_width, a.stem_stride)
    else:
        model = efficientnet_lite0(a.size)
    model = model.to(device).train()
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    g = torch.Generator().manual_seed(0)
    images = torch.randn(a.batch_size, 3, a.size, a.size, generator=g).to(device)
    labels = torch.randint(0, 2, (a.batch_size,), generator=g).to(device)
    if a.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(a.warmup):
        step()
    sync()
    start = time.perf_counter()
    cpu_start = time.process_time()
    for _ in range(a.steps):
        loss = step()
    sync()
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    if not torch.isfinite(loss):
        raise SystemExit(f"bench_torch_train: the loss became {loss.item()}")

    print(json.dumps({
        "model": a.model,
        "device": a.device,
        "threads": a.threads,
        "batch": a.batch_size,
        "size": a.size,
        "steps": a.steps,
        "img_per_s": round(a.batch_size * a.steps / seconds, 2),
        "ms_per_step": round(1000 * seconds / a.steps, 2),
        "cores_used": round(cpu / seconds, 2),
        "channels_last": a.channels_last,
        "torch_version": torch.__version__,
    }))

    if a.profile:
        import os
        import sys

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import op_profile
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(a.steps):
                step()
            sync()
        total, by_group, leftovers = op_profile.torch_groups(prof, a.steps)
        args = argparse.Namespace(steps=a.steps, unknown=int(os.environ.get("OP_PROFILE_UNKNOWN", "0")))
        op_profile.report(args, "torch.profiler", total, by_group, leftovers, unit_ms=1e-3)


if __name__ == "__main__":
    main()
