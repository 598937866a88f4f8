//! Training batch norms alone, forward and backward, at the shapes of
//! EfficientNet-Lite0's fine-tuned tail on 112-px patches (batch 16: 240
//! channels of 14×14, 480 and 672 of 7×7, 672 and 1,152 of 4×4), on flex with
//! two threads: each round times 40 steps over all five shapes, with the
//! ReLU6 fused into the norm (`batch_norm_relu6`, as the expansion and
//! depthwise layers run) and without it (the projection layers' norm).
//! Written to compare builds of burn-flex's batch-norm kernels
//! (docs/BENCHMARKS.md).
//!
//! ```text
//! cargo run --release --example bench_batch_norm [COPIES]
//! ```
//!
//! `COPIES` [1] inputs of each shape, used in turn: with 8 (90 MB) a step's
//! inputs are no longer in cache, as in training, where a norm's input was
//! written in the forward pass.
//!
//! One line per round and kind: `round R fused F T ms` (mean per step).

use std::time::Instant;

use burn::{
    nn::{BatchNorm, BatchNormConfig},
    tensor::{Distribution, Tensor},
};
use histoshard::train::{
    learner::{self, DeviceChoice},
    ops::batch_norm_relu6::batch_norm_relu6,
};

/// (channels, side) of the tail's batch norms.
const SHAPES: [(usize, usize); 5] = [(240, 14), (480, 7), (672, 7), (672, 4), (1152, 4)];

fn main() {
    // As `train` does (src/alloc.rs).
    histoshard::alloc::keep_freed_memory();
    learner::set_compute_threads(2);
    let flex: DeviceChoice = "flex".parse().expect("flex is a device");
    let device = flex.device().expect("this build has flex").autodiff();
    let copies = match std::env::args().nth(1) {
        Some(n) => n.parse::<usize>().expect("COPIES is a number").max(1),
        None => 1,
    };
    let cases: Vec<(BatchNorm, Tensor<4>)> = SHAPES
        .iter()
        .cycle()
        .take(SHAPES.len() * copies)
        .map(|&(channels, side)| {
            let bn = BatchNormConfig::new(channels)
                .with_epsilon(1e-3)
                .init(&device);
            // Values on both sides of ReLU6's bounds.
            let x = Tensor::<4>::random(
                [16, channels, side, side],
                Distribution::Normal(0.5, 2.0),
                &device,
            )
            .require_grad();
            (bn, x)
        })
        .collect();
    let mut next = 0;
    let mut step = |fused: bool| {
        let copy = &cases[next * SHAPES.len()..][..SHAPES.len()];
        next = (next + 1) % copies;
        for (bn, x) in copy {
            let y = if fused {
                batch_norm_relu6(bn, x.clone())
            } else {
                bn.forward(x.clone())
            };
            // The multiply gives the norm an output gradient of its own
            // values, not only `sum`'s single value broadcast.
            let _grads = (y * 1.0).sum().backward();
        }
    };
    for _ in 0..5 {
        step(true);
        step(false);
    }
    for round in 0..3 {
        for fused in [true, false] {
            let started = Instant::now();
            for _ in 0..40 {
                step(fused);
            }
            let ms = started.elapsed().as_secs_f64() * 1000.0 / 40.0;
            println!("round {round} fused {fused} {ms:.3} ms");
        }
    }
}
