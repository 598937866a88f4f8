#!/usr/bin/env python3
"""PyTorch eager per-operation timings: the baseline for histoshard's
``examples/bench_ops.rs`` (the same cases, shapes and flags, the same JSON
lines), to find which of EfficientNet-Lite0's operations burn runs
pathologically slowly.

Cases (batch ``--batch-size``; convolutions bias-free, TF "SAME" padding done
as ``efficientnet_lite_pytorch`` does it: ``F.pad`` then an unpadded conv):

* ``conv3x3_s2_dense`` 3→32 at 224² (the stem; the input needs no gradient);
* ``dw3x3_s1`` depthwise 32 ch at 112²; ``dw3x3_s2`` 96 ch 112² → 56²
  (padding (0, 1)); ``dw3x3_s2_sym`` the same with symmetric padding 1
  (the conv's own); ``dw5x5_s2`` 144 ch 56² → 28² (padding (1, 2));
* ``pw1x1_16_96`` at 112², ``pw1x1_32_16`` at 112², ``pw1x1_96_24`` at 56²;
* ``pad_asym``: that (0, 1) zero padding alone, 96 ch 112²; ``full``: a
  zero tensor of its output's size (no backward);
* ``bn_train``: BatchNorm2d(32, eps 1e-3, momentum 0.01) in train mode at 112²;
* ``relu6`` (F.relu6, what the PyTorch model uses), ``relu``, ``add`` (two
  tensors), ``sum`` (to a scalar), all 32 ch at 112²;
* ``avgpool``: AdaptiveAvgPool2d(1) on 1280 ch at 7²; ``dropout`` 0.2 on
  [batch, 1280]; ``linear_ce``: Linear(1280, 2) then cross-entropy;
* ``effnet_lite0``: ``efficientnet_lite_pytorch``'s EfficientNet-Lite0 (2
  classes, random weights, train mode) at 224²; ``effnet_lite0_s1sym`` the
  same at 225², where every padding is symmetric. Skipped (an ``error``
  line) when the package is not importable.

``fwd_ms``: the forward alone, grad enabled (the graph is recorded, then
dropped). ``fwd_bwd_ms``: forward, the output summed to a scalar (the loss
for ``linear_ce`` and the networks), backward. Means over ``--iters`` after
``--warmup`` untimed iterations; CUDA is synchronised before the clock starts
and before it stops.

Prints one JSON line per case:
``{"case", "device", "batch", "fwd_ms", "fwd_bwd_ms", "iters"}`` (``error`` in
place of the timings when a case fails).

    python scripts/bench_torch_ops.py --device cuda --batch-size 32
    python scripts/bench_torch_ops.py --batch-size 4 --iters 3 --warmup 1 --cases dw3x3_s2,pad_asym
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

CASES = [
    "conv3x3_s2_dense",
    "dw3x3_s1",
    "dw3x3_s2",
    "dw3x3_s2_sym",
    "dw5x5_s2",
    "pw1x1_16_96",
    "pw1x1_32_16",
    "pw1x1_96_24",
    "pad_asym",
    "full",
    "bn_train",
    "relu6",
    "relu",
    "add",
    "sum",
    "avgpool",
    "dropout",
    "linear_ce",
    "effnet_lite0",
    "effnet_lite0_s1sym",
]

# case: (in, out, kernel, stride, groups, explicit symmetric padding or None for SAME, side, input grad)
CONVS = {
    "conv3x3_s2_dense": (3, 32, 3, 2, 1, None, 224, False),
    "dw3x3_s1": (32, 32, 3, 1, 32, None, 112, True),
    "dw3x3_s2": (96, 96, 3, 2, 96, None, 112, True),
    "dw3x3_s2_sym": (96, 96, 3, 2, 96, 1, 112, True),
    "dw5x5_s2": (144, 144, 5, 2, 144, None, 56, True),
    "pw1x1_16_96": (16, 96, 1, 1, 1, None, 112, True),
    "pw1x1_32_16": (32, 16, 1, 1, 1, None, 112, True),
    "pw1x1_96_24": (96, 24, 1, 1, 1, None, 56, True),
}


def same_padding(size, kernel, stride):
    """TF "SAME" (left, right) padding, as efficientnet_lite_pytorch and burn compute it."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Module):
    """Conv2dStaticSamePadding: F.pad (when any) then an unpadded conv."""

    def __init__(self, cin, cout, k, s, g, padding, side):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, padding=padding or 0, groups=g, bias=False)
        if padding is None:
            left, right = same_padding(side, k, s)
            self.pad = (left, right, left, right) if left or right else None
        else:
            self.pad = None

    def forward(self, x):
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return self.conv(x)


def build(case, b, device, g):
    """(step(backward) for one iteration, whether the case has a backward)."""

    def randn(*shape, grad=True):
        return torch.randn(*shape, generator=g).to(device).requires_grad_(grad)

    def finish(y, backward):
        if backward:
            y.sum().backward()

    if case in CONVS:
        cin, cout, k, s, groups, p, side, grad = CONVS[case]
        m = SameConv(cin, cout, k, s, groups, p, side).to(device).train()
        x = randn(b, cin, side, side, grad=grad)
        return lambda bwd: finish(m(x), bwd), True
    if case == "pad_asym":
        x = randn(b, 96, 112, 112)
        return lambda bwd: finish(F.pad(x, (0, 1, 0, 1)), bwd), True
    if case == "full":
        return lambda bwd: torch.full((b, 96, 113, 113), 0.0, device=device), False
    if case == "bn_train":
        m = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01).to(device).train()
        x = randn(b, 32, 112, 112)
        return lambda bwd: finish(m(x), bwd), True
    if case in ("relu6", "relu", "sum"):
        f = {"relu6": F.relu6, "relu": F.relu, "sum": torch.sum}[case]
        x = randn(b, 32, 112, 112)
        return lambda bwd: finish(f(x), bwd), True
    if case == "add":
        x, y = randn(b, 32, 112, 112), randn(b, 32, 112, 112)
        return lambda bwd: finish(x + y, bwd), True
    if case == "avgpool":
        m = nn.AdaptiveAvgPool2d(1)
        x = randn(b, 1280, 7, 7)
        return lambda bwd: finish(m(x), bwd), True
    if case == "dropout":
        m = nn.Dropout(0.2).train()
        x = randn(b, 1280)
        return lambda bwd: finish(m(x), bwd), True
    labels = (torch.arange(b) % 2).to(device)
    loss_fn = nn.CrossEntropyLoss()
    if case == "linear_ce":
        m = nn.Linear(1280, 2).to(device)
        x = randn(b, 1280)

        def step(bwd):
            loss = loss_fn(m(x), labels)
            if bwd:
                loss.backward()

        return step, True
    if case in ("effnet_lite0", "effnet_lite0_s1sym"):
        from efficientnet_lite_pytorch import EfficientNet

        side = 224 if case == "effnet_lite0" else 225
        m = EfficientNet.from_name("efficientnet-lite0", num_classes=2, image_size=side)
        m = m.to(device).train()
        x = randn(b, 3, side, side, grad=False)

        def step(bwd):
            logits = m(x)
            if bwd:
                loss_fn(logits, labels).backward()

        return step, True
    raise ValueError(f"unknown case {case}")


def timed(step, backward, a, sync):
    """Mean ms of step(backward) over --iters, after --warmup untimed calls."""
    for _ in range(a.warmup):
        step(backward)
    sync()
    start = time.perf_counter()
    for _ in range(a.iters):
        step(backward)
    sync()
    return 1000 * (time.perf_counter() - start) / a.iters


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--iters", type=int, default=20, help="timed iterations (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default 3)")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated (default: all)")
    a = p.parse_args()
    cases = a.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown cases {unknown}; known: {CASES}")
    if a.iters < 1 or a.batch_size < 1 or a.warmup < 0:
        p.error("--iters and --batch-size must be positive, --warmup not negative")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device")

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device = torch.device(a.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for case in [c for c in CASES if c in cases]:
        line = {"case": case, "device": a.device, "batch": a.batch_size}
        try:
            g = torch.Generator().manual_seed(0)
            step, has_backward = build(case, a.batch_size, device, g)
            line["fwd_ms"] = round(timed(step, False, a, sync), 3)
            line["fwd_bwd_ms"] = round(timed(step, True, a, sync), 3) if has_backward else None
            line["iters"] = a.iters
        except Exception as e:  # one failing case (no package, out of memory) must not stop the rest
            line["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(line), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
