//! The weight gradient of EfficientNet-Lite0's depthwise convolutions on
//! LibTorch's CPU: oneDNN's backward kernel reached through autograd (what
//! vendor/burn-tch's `conv2d_weight_backward` does for every other
//! convolution, forward included) against the direct computation that it now
//! runs for depthwise ones (`vendor/burn-tch/src/ops/depthwise.rs`, compiled
//! into this example as it is), alternated on the same tensors.
//!
//! ```text
//! cargo run --release --features tch --example bench_dw_wgrad -- --kernel 5 --size 224
//! cargo run --release --features tch --example bench_dw_wgrad -- --check
//! ```
//!
//! Flags: `--kernel 5|3` [5] (the network's 5×5 or 3×3 layers, at their
//! shapes for batch 16), `--size` [224] (the image side; 112 halves every
//! plane), `--reps` [5], `--threads` [2]. One line per layer with both
//! medians and the largest difference relative to the largest value, then
//! their sums and the load average. `--check` compares the two on small
//! shapes with padding, strides and dilations instead.

#[path = "../vendor/burn-tch/src/ops/depthwise.rs"]
mod depthwise;

use std::time::Instant;

use tch::{Device, Kind, Tensor};

/// A depthwise convolution's stride, padding and dilation.
struct Conv {
    stride: [i64; 2],
    pad: [i64; 2],
    dil: [i64; 2],
}

impl Conv {
    /// oneDNN's weight gradient through autograd, as vendor/burn-tch computes
    /// it for every convolution but the CPU's depthwise ones.
    fn onednn(&self, x: &Tensor, w: &Tensor, g: &Tensor) -> Tensor {
        let groups = w.size()[0];
        tch::with_grad(|| {
            let w = w.detach().set_requires_grad(true);
            let y = x.conv2d(&w, None::<Tensor>, self.stride, self.pad, self.dil, groups);
            let objective = (y * g).sum(None::<Kind>);
            Tensor::run_backward(&[objective], &[&w], false, false)
                .pop()
                .expect("one gradient")
        })
    }

    /// The direct weight gradient vendor/burn-tch runs for them.
    fn direct(&self, x: &Tensor, w: &Tensor, g: &Tensor) -> Tensor {
        let u = |v: [i64; 2]| v.map(|v| v as usize);
        let groups = w.size()[0] as usize;
        depthwise::weight_grad(x, w, g, u(self.stride), u(self.pad), u(self.dil), groups)
            .expect("a depthwise f32 CPU convolution")
    }
}

/// `f()` and how long it took, in ms.
fn timed(f: impl FnOnce() -> Tensor) -> (Tensor, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64() * 1e3)
}

fn relative_difference(a: &Tensor, b: &Tensor) -> f64 {
    let diff = f64::try_from((a - b).abs().max()).expect("a scalar");
    diff / f64::try_from(a.abs().max()).expect("a scalar").max(1e-30)
}

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

fn main() {
    let (mut kernel, mut size, mut reps, mut threads, mut check) =
        (5i64, 224i64, 5usize, 2i32, false);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).expect("a value after the flag");
        match args[i].as_str() {
            "--kernel" => kernel = value().parse().expect("3 or 5"),
            "--size" => size = value().parse().expect("a number"),
            "--reps" => reps = value().parse().expect("a number"),
            "--threads" => threads = value().parse().expect("a number"),
            "--check" => {
                check = true;
                i += 1;
                continue;
            }
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    if check {
        // [n, c, h, w], [kh, kw], stride, padding, dilation
        for (input, k, stride, pad, dil) in [
            ([3, 4, 13, 13], [5, 5], [1, 1], [4, 4], [2, 2]),
            ([2, 5, 15, 14], [5, 5], [2, 2], [3, 1], [2, 2]),
            ([2, 3, 11, 10], [5, 3], [2, 1], [1, 2], [1, 2]),
            ([2, 4, 17, 16], [7, 7], [3, 3], [0, 0], [1, 1]),
            ([2, 4, 12, 11], [3, 3], [2, 2], [2, 1], [2, 2]),
            ([1, 2, 9, 20], [3, 5], [3, 2], [2, 3], [1, 3]),
        ] {
            let x = randn(&input);
            let w = randn(&[input[1], 1, k[0], k[1]]);
            let g = randn(
                &x.conv2d(&w, None::<Tensor>, stride, pad, dil, input[1])
                    .size(),
            );
            let conv = Conv { stride, pad, dil };
            let d = relative_difference(&conv.onednn(&x, &w, &g), &conv.direct(&x, &w, &g));
            println!(
                "{input:?} kernel {k:?} stride {stride:?} padding {pad:?} dilation {dil:?}: relative difference {d:.1e}"
            );
            assert!(d < 1e-5, "the direct gradient differs");
        }
        return;
    }
    // EfficientNet-Lite0 at 224²: (channels, side, stride) of each layer shape.
    let layers: &[(i64, i64, i64)] = if kernel == 5 {
        &[
            (144, 56, 2),
            (240, 28, 1),
            (480, 14, 1),
            (672, 14, 1),
            (672, 14, 2),
            (1152, 7, 1),
        ]
    } else {
        &[
            (32, 112, 1),
            (96, 112, 2),
            (144, 56, 1),
            (240, 28, 2),
            (480, 14, 1),
            (1152, 7, 1),
        ]
    };
    let mut sums = [0f64; 2];
    for &(c, side, s) in layers {
        let h = side * size / 224;
        // TF "SAME" padding, as EfficientNet's, applied first as burn-tch does.
        let out = (h + s - 1) / s;
        let total = ((out - 1) * s + kernel - h).max(0);
        let x = randn(&[16, c, h, h]).constant_pad_nd([
            total / 2,
            total - total / 2,
            total / 2,
            total - total / 2,
        ]);
        let w = randn(&[c, 1, kernel, kernel]);
        let g = randn(&[16, c, out, out]);
        let mut times = [Vec::new(), Vec::new()];
        let mut diff = 0f64;
        let conv = Conv {
            stride: [s, s],
            pad: [0, 0],
            dil: [1, 1],
        };
        for _ in 0..reps {
            let (a, old) = timed(|| conv.onednn(&x, &w, &g));
            let (b, new) = timed(|| conv.direct(&x, &w, &g));
            times[0].push(old);
            times[1].push(new);
            diff = relative_difference(&a, &b);
        }
        let [old, new] = times.map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        });
        sums[0] += old;
        sums[1] += new;
        println!(
            "[16, {c}, {h}, {h}] {kernel}×{kernel} stride {s}: oneDNN {old:.1} ms, direct {new:.1} ms (difference {diff:.1e})"
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "sum of medians: oneDNN {:.1} ms, direct {:.1} ms; threads {threads}; load {}",
        sums[0],
        sums[1],
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
