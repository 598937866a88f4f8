//! `histoshard_kernels::depthwise` on EfficientNet-Lite0's 16 depthwise
//! convolutions (batch 16), both strategies side by side on one thread:
//! the output, the input gradient and the weight gradient of each layer,
//! best of `--reps`, and which strategy [`Depthwise::strategy`] picks. The
//! choice of `CHANNELS_LAST_MAX_PLANE` rests on this table
//! (docs/BENCHMARKS.md).
//!
//! ```text
//! cargo run --release --example bench_depthwise -- --size 112
//! ```
//!
//! Flags: `--size` [112] (the image side: 224 is the network's own),
//! `--reps` [7].

use std::time::Instant;

use histoshard_kernels::depthwise::{Depthwise, Strategy};

// The tests' deterministic values (only `values` is used here).
#[allow(dead_code)]
#[path = "../tests/common/kernels.rs"]
mod kernels;

use kernels::values;

/// EfficientNet-Lite0's depthwise layers: kernel, stride, channels, and the
/// side of the input at 224 px.
const LAYERS: [(usize, usize, usize, usize); 16] = [
    (3, 1, 32, 112),
    (3, 2, 96, 112),
    (3, 1, 144, 56),
    (5, 2, 144, 56),
    (5, 1, 240, 28),
    (3, 2, 240, 28),
    (3, 1, 480, 14),
    (3, 1, 480, 14),
    (5, 1, 480, 14),
    (5, 1, 672, 14),
    (5, 1, 672, 14),
    (5, 2, 672, 14),
    (5, 1, 1152, 7),
    (5, 1, 1152, 7),
    (5, 1, 1152, 7),
    (3, 1, 1152, 7),
];

const BATCH: usize = 16;

/// TF "SAME" padding: the output is `ceil(side / stride)`, the padding
/// before is half of what that needs (rounded down).
fn layer(kernel: usize, stride: usize, channels: usize, side: usize) -> Depthwise {
    let out = side.div_ceil(stride);
    let before = ((out - 1) * stride + kernel).saturating_sub(side) / 2;
    Depthwise {
        batch: BATCH,
        channels,
        input: [side; 2],
        padding: [before; 2],
        kernel: [kernel; 2],
        out: [out; 2],
        stride: [stride; 2],
        dilation: [1, 1],
    }
}

/// Best of `reps` of forward, input gradient and weight gradient, in ms.
fn time(shape: &Depthwise, strategy: Strategy, reps: usize) -> [f64; 3] {
    let x = values(BATCH * shape.channels * shape.input[0] * shape.input[1], 1);
    let w = values(shape.channels * shape.taps(), 2);
    let g = values(BATCH * shape.channels * shape.out[0] * shape.out[1], 3);
    let (mut y, mut dx, mut dw) = (vec![0.0; g.len()], vec![0.0; x.len()], vec![0.0; w.len()]);
    let mut best = [f64::MAX; 3];
    let mut keep = |k: usize, started: Instant| {
        best[k] = best[k].min(started.elapsed().as_secs_f64() * 1e3);
    };
    for _ in 0..reps {
        let started = Instant::now();
        shape.forward_by(strategy, &x, &w, 0, &mut y);
        keep(0, started);
        let started = Instant::now();
        shape.input_grad_by(strategy, &w, &g, 0, &mut dx);
        keep(1, started);
        let started = Instant::now();
        shape.weight_grad_by(strategy, &x, &g, 0, &mut dw);
        keep(2, started);
    }
    best
}

fn main() {
    let mut size = 112;
    let mut reps = 7;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--size", Some(v)) => size = v,
            ("--reps", Some(v)) => reps = v,
            _ => panic!("usage: bench_depthwise [--size N] [--reps N]"),
        }
    }
    println!(
        "EfficientNet-Lite0 depthwise layers, batch {BATCH}, {size} px, one thread, best of {reps}, ms"
    );
    println!("| layer | planes: out, dx, dW | channels-last: out, dx, dW | picked |");
    println!("|---|---|---|---|");
    let mut totals = [[0.0; 3]; 3];
    for (kernel, stride, channels, side) in LAYERS {
        let shape = layer(kernel, stride, channels, (side * size).div_ceil(224));
        let picked = shape.strategy();
        let planes = time(&shape, Strategy::Planes, reps);
        let last = time(&shape, Strategy::ChannelsLast, reps);
        let chosen = if picked == Strategy::Planes {
            planes
        } else {
            last
        };
        for (total, row) in totals.iter_mut().zip([planes, last, chosen]) {
            total.iter_mut().zip(row).for_each(|(t, v)| *t += v);
        }
        let [h, w] = shape.input;
        let [oh, ow] = shape.out;
        let cells = |t: [f64; 3]| format!("{:.2}, {:.2}, {:.2}", t[0], t[1], t[2]);
        println!(
            "| {kernel}×{kernel}/{stride}, {channels} ch, {h}×{w} → {oh}×{ow} | {} | {} | {picked:?} |",
            cells(planes),
            cells(last)
        );
    }
    let sum = |t: [f64; 3]| t.iter().sum::<f64>();
    println!(
        "| **all 16** | {:.1} | {:.1} | picked: {:.1} |",
        sum(totals[0]),
        sum(totals[1]),
        sum(totals[2])
    );
}
