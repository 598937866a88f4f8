#!/usr/bin/env python3
"""Per-operation profile of a training step: where the time of an
EfficientNet-Lite0 fine-tuning step goes, grouped into the same operations
for burn + flex, burn + LibTorch and PyTorch (docs/BENCHMARKS.md).

Two sources, one grouping:

* ``perf`` (the Rust side): ``perf record --call-graph dwarf`` on
  ``examples/bench_train``, then ``perf script`` piped into this script::

      perf record -F 199 --call-graph dwarf,16384 -o flex.data -- \\
          $ex --model efficientnet-lite0 --batch-size 16 --steps 3 --warmup 1 --device flex
      perf script -i flex.data -F tid,period,ip,sym,dso --no-inline | \\
          python scripts/op_profile.py perf --steps 4

  Every sample is CPU time of one thread. Its operation is read off its call
  stack: the innermost frame that names an operation (a burn autodiff or
  backend op, a LibTorch ``at::native`` function, our ``relu6``...) wins;
  a sample whose stack names none (work a rayon or OpenMP worker picked up:
  its stack starts at the pool) is given the operation of its kernel's
  symbol when that says it (a depthwise kernel, a GEMM, oneDNN's JIT code),
  else split between operations in the proportions the same symbol has in
  the samples whose stack does say (an element-wise kernel serves batch
  norm, ReLU6 and the residual adds alike). oneDNN's JIT kernels count as
  one symbol per kind; what no stack names of them (perf cannot unwind JIT
  code) is "oneDNN JIT code, operation not told": LibTorch's convolutions and
  layout reorders.

* ``torch.profiler`` (PyTorch): ``scripts/bench_torch_train.py --profile``
  calls :func:`torch_groups` on the profiled steps; an event's self time goes
  to the operation of its nearest ancestor that names one, convolutions
  sorted by their weight's shape (``[C, 1, k, k]`` depthwise, ``[O, I, 1, 1]``
  pointwise).

The perf numbers are CPU time (both threads), torch.profiler's are wall
time of the calling thread; shares compare, milliseconds compare within a
column. Prints a JSON object ``{"source", "total_ms_per_step", "groups":
[[name, share, ms_per_step], ...]}`` and, with ``--unknown N``, the N
largest symbols left in "other".
"""

import argparse
import collections
import json
import re
import sys

GROUPS = [
    "depthwise conv fwd",
    "pointwise + stem conv fwd",
    "conv fwd (kind not told)",
    "depthwise conv bwd",
    "pointwise + stem conv bwd",
    "conv bwd, input grad (kind not told)",
    "conv bwd, weight grad (kind not told)",
    "batch norm fwd",
    "batch norm bwd",
    "activations (ReLU6) fwd+bwd",
    "padding (SAME) fwd+bwd",
    "elementwise (residual, grad sums)",
    "Adam",
    "memory / alloc",
    "oneDNN JIT code, operation not told",
    "other",
]

# ---------------------------------------------------------------- perf side

# Frames that name an operation, innermost first wins: (regex, group).
# "CONV_*" groups are convolutions whose kind the kernel then tells.
CONTEXT = [
    (r"pad_asymmetric_conv_input|crop_asymmetric_input_grad|constant_pad_nd|float_pad\b|ops::pad::pad\b", "padding (SAME) fwd+bwd"),
    (r"batch_norm\w*backward|BatchNorm\w*Backward|batch_norm_backward|batch_norm::backward", "batch norm bwd"),
    (r"batch_norm|BatchNorm", "batch norm fwd"),
    (r"relu|hardtanh|threshold_backward|clamp", "activations (ReLU6) fwd+bwd"),
    (r"[Aa]dam|step_dyn", "Adam"),
    (r"conv2d_weight_backward|convolution_backward_weights|bwd_weights", "CONV_WEIGHT"),
    (r"conv2d_x_backward|conv_transpose|bwd_data", "CONV_INPUT"),
    (r"convolution_backward", "CONV_BWD"),
    (r"conv2d|convolution|Conv2d", "CONV_FWD"),
]

# histoshard's own kernels (vendor/README.md) name their kind too: the depthwise
# ones (histoshard_kernels, burn-flex's depthwise transposed convolution) and
# burn-flex's im2col + GEMM weight gradient, which in EfficientNet-Lite0 is
# what the pointwise and stem convolutions take.
DEPTHWISE = (r"conv3d_depthwise_impl|_dw_conv|dw_conv|conv_depthwise|histoshard_kernels::depthwise|"
             r"depthwise_transpose|conv_weight_grad::depthwise")
POINTWISE = r"1x1|conv3d_1x1_impl|conv_weight_grad::im2col_gemm|conv_weight_grad::add_item_group"
# A frame of the thread that runs the step: its stack is whole, so a sample
# with no operation in it is element-wise work of the step itself (residual
# adds, gradient sums), not a kernel a pool worker picked up.
STEP_ROOT = r"bench_train::steps|bench_train::main"
MEMORY = (r"^(__memmove|__memcpy|__memset|memcpy|memset|malloc|free|_int_malloc|_int_free|cfree|"
          r"__libc_malloc|__libc_free|__libc_calloc|calloc|realloc|__rust_alloc|__rust_dealloc|"
          r"clear_page|asm_exc_page_fault|exc_page_fault|do_anonymous_page|__alloc_pages|"
          r"madvise|mmap|munmap|zap_|release_pages|_raw_spin|__handle_mm_fault|handle_mm_fault)")
ELEMENTWISE = (r"binary|scalar_op|unary|zip_|float_add|float_sub|float_mul|float_div|add_kernel|"
               r"mul_kernel|BinaryOp|vectorized_loop|cpu_kernel|basic_loop|reduce|sum_dim|mean_dim|"
               r"swap_dims|into_contiguous|copy_2d|copy_|strided|run_vectorized|vectorize")


def perf_samples(lines):
    """(tid, period, [symbols innermost first]) of `perf script` output."""
    head, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if head:
                yield head[0], head[1], frames
            head, frames = None, []
            continue
        if not line.startswith("\t") and head is None:
            parts = line.split()
            tid = parts[0]
            period = next((int(p) for p in parts[1:] if p.isdigit()), 1)
            head = (tid, period)
            continue
        parts = line.strip().split(None, 1)
        sym = parts[1] if len(parts) > 1 else "[unknown]"
        sym = re.sub(r"\+0x[0-9a-f]+", "", sym)
        sym = re.sub(r" \(([^()]*)\)$", r" [\1]", sym)
        frames.append(sym)
    if head:
        yield head[0], head[1], frames


def name(frame):
    return frame.split(" [")[0]


# oneDNN's JIT kernels (named through perf's map of the process, /tmp/perf-PID.map)
# are numbered per instance: "jit_single_blk_kernel.72". Perf cannot unwind
# through JIT code, so most of their samples have the kernel and nothing else;
# one name per kind lets the samples that do have a stack share out the rest.
JIT = r" \[/tmp/perf-\d+\.map\]$"


def leaf_kind(leaf):
    return re.sub(r"\.\d+(?=" + JIT + ")", "", leaf)


def perf_group(frames):
    """The group a stack says, or None (then the kernel's share decides)."""
    leaf = name(frames[0]) if frames else "[unknown]"
    depthwise = any(re.search(DEPTHWISE, name(f)) for f in frames)
    for f in frames:
        for pattern, group in CONTEXT:
            if not re.search(pattern, name(f)):
                continue
            if group == "CONV_FWD":
                # A convolution a backward op runs (burn's default weight
                # gradient is one) belongs to that backward op.
                outer = [g for f2 in frames for p, g in CONTEXT
                         if g in ("CONV_WEIGHT", "CONV_INPUT", "CONV_BWD") and re.search(p, name(f2))]
                if not outer:
                    if depthwise:
                        return "depthwise conv fwd"
                    if any(re.search(POINTWISE, name(f2)) for f2 in frames):
                        return "pointwise + stem conv fwd"
                    return "conv fwd (kind not told)"
                group = outer[0]
            if group in ("CONV_WEIGHT", "CONV_INPUT", "CONV_BWD"):
                if depthwise:
                    return "depthwise conv bwd"
                if any(re.search(POINTWISE, name(f2)) for f2 in frames):
                    return "pointwise + stem conv bwd"
                return ("conv bwd, weight grad (kind not told)" if group == "CONV_WEIGHT"
                        else "conv bwd, input grad (kind not told)")
            return group
    if depthwise:
        bwd = re.search(r"bwd|backward", leaf)
        return "depthwise conv bwd" if bwd else "depthwise conv fwd"
    if re.search(MEMORY, leaf):
        return "memory / alloc"
    if any(re.search(STEP_ROOT, name(f)) for f in frames):
        return "elementwise (residual, grad sums)" if re.search(ELEMENTWISE, leaf) else "other"
    return None


def perf_main(a):
    by_group = collections.Counter()
    by_leaf_group = collections.defaultdict(collections.Counter)
    unresolved = collections.Counter()
    total = 0
    for _tid, period, frames in perf_samples(sys.stdin):
        total += period
        leaf = leaf_kind(frames[0]) if frames else "[unknown]"
        group = perf_group(frames)
        if group is None:
            unresolved[leaf] += period
        else:
            by_group[group] += period
            by_leaf_group[leaf][group] += period
    leftovers = collections.Counter()
    for leaf, period in unresolved.items():
        seen = by_leaf_group.get(leaf)
        if seen:
            n = sum(seen.values())
            for group, p in seen.items():
                by_group[group] += period * p / n
        elif re.search(ELEMENTWISE, leaf):
            by_group["elementwise (residual, grad sums)"] += period
        elif re.search(JIT, leaf):
            # LibTorch's convolutions and their layout reorders, no stack to
            # say which (forward, input or weight gradient).
            by_group["oneDNN JIT code, operation not told"] += period
        else:
            by_group["other"] += period
            leftovers[leaf] += period
    report(a, "perf", total, by_group, leftovers)


def report(a, source, total, by_group, leftovers, unit_ms=None):
    # perf periods are nanoseconds of CPU time (cpu-clock / task-clock).
    scale = unit_ms if unit_ms is not None else 1e-6
    out = {
        "source": source,
        "total_ms_per_step": round(total * scale / a.steps, 1),
        "groups": [
            [g, round(by_group.get(g, 0) / total, 4) if total else 0.0,
             round(by_group.get(g, 0) * scale / a.steps, 1)]
            for g in GROUPS
        ],
    }
    print(json.dumps(out))
    if a.unknown:
        for sym, p in leftovers.most_common(a.unknown):
            print(f"  other {100 * p / total:5.1f}%  {sym}", file=sys.stderr)


# --------------------------------------------------------------- torch side

TORCH_CONTEXT = [
    (r"Optimizer\.step|_foreach_|adam", "Adam"),
    (r"constant_pad_nd|aten::pad\b|ZeroPad|ConstantPad", "padding (SAME) fwd+bwd"),
    (r"batch_norm.*backward|BatchNormBackward", "batch norm bwd"),
    (r"batch_norm", "batch norm fwd"),
    (r"hardtanh|relu6|ReLU6|Hardtanh|aten::relu|threshold", "activations (ReLU6) fwd+bwd"),
]


def torch_conv_group(event, backward):
    """The group of a convolution event from its weight's shape."""
    shapes = [s for s in (event.input_shapes or []) if isinstance(s, list) and len(s) == 4]
    # convolution_backward(grad_out, input, weight, ...); the others (input, weight, ...).
    w = None
    if "backward" in event.name and len(shapes) >= 3:
        w = shapes[2]
    elif len(shapes) >= 2:
        w = shapes[1]
    if w is None:
        return None
    kind = "depthwise" if w[1] == 1 and w[0] > 1 else "pointwise + stem"
    return f"{kind} conv {'bwd' if backward else 'fwd'}"


def torch_groups(prof, steps):
    """Self CPU time of `prof`'s events by group: {group: ms per step}."""
    events = prof.profiler.function_events
    by_group = collections.Counter()
    leftovers = collections.Counter()
    total = 0.0
    for e in events:
        self_us = e.self_cpu_time_total
        if self_us <= 0:
            continue
        total += self_us
        chain, p = [], e
        while p is not None:
            chain.append(p)
            p = p.cpu_parent
        backward = any("backward" in c.name.lower() for c in chain)
        group = None
        for c in chain:
            if "conv" in c.name and c.name.startswith("aten::"):
                group = torch_conv_group(c, backward)
                if group:
                    break
            for pattern, g in TORCH_CONTEXT:
                if re.search(pattern, c.name):
                    group = g
                    break
            if group:
                break
        if group is None:
            if re.search(r"aten::(empty|zeros|resize_|fill_|zero_|set_|detach|as_strided|view|"
                         r"t\b|transpose|reshape|expand)", e.name):
                group = "memory / alloc"
            elif re.search(r"aten::(add|mul|sub|div|copy_|sum|mean|clone)", e.name):
                group = "elementwise (residual, grad sums)"
            else:
                group = "other"
                leftovers[e.name] += self_us
        by_group[group] += self_us
    return total, by_group, leftovers


# -------------------------------------------------------------- oneDNN side


def onednn_main(a):
    """Time of every oneDNN primitive from ONEDNN_VERBOSE=1 lines on stdin,
    by primitive, implementation, direction and convolution kind."""
    by = collections.Counter()
    calls = collections.Counter()
    for line in sys.stdin:
        f = line.rstrip().split(",")
        if len(f) < 10 or f[2] != "primitive" or f[3] != "exec":
            continue
        prim, impl, prop, desc = f[5], f[6], f[7], f[-2]
        try:
            ms = float(f[-1])
        except ValueError:
            continue
        kind = ""
        m = re.search(r"(?:g(\d+))?mb\d+_ic\d+oc\d+\S*?kh(\d+)", desc)
        if prim in ("convolution", "deconvolution") and m:
            groups, kh = int(m.group(1) or 1), int(m.group(2))
            kind = ("depthwise" if groups > 1 else "pointwise" if kh == 1 else "stem") + f" {kh}x{kh}"
        key = (prim, impl, prop, kind)
        by[key] += ms / a.steps
        calls[key] += 1
    total = sum(by.values())
    print(json.dumps({
        "source": "onednn_verbose",
        "total_ms_per_step": round(total, 1),
        "primitives": [[*k, calls[k] // a.steps, round(v, 1), round(v / total, 4) if total else 0.0]
                       for k, v in by.most_common()],
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="source", required=True)
    o = sub.add_parser("onednn", help="ONEDNN_VERBOSE=1 output on stdin")
    o.add_argument("--steps", type=int, required=True,
                   help="training steps the output covers (warm-up included)")
    q = sub.add_parser("perf", help="`perf script` output on stdin")
    q.add_argument("--steps", type=int, required=True,
                   help="training steps the recording covers (warm-up included)")
    q.add_argument("--unknown", type=int, default=0,
                   help="list the N largest symbols left in 'other' (stderr)")
    a = p.parse_args()
    if a.source == "onednn":
        onednn_main(a)
    else:
        perf_main(a)


if __name__ == "__main__":
    main()
