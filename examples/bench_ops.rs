//! Per-operation timings of EfficientNet-Lite0's building blocks, to find an
//! operation that is pathologically slow on one backend (LibTorch on CUDA
//! first of all). PyTorch's side: `scripts/bench_torch_ops.py`, which takes the
//! same flags, runs the same cases at the same shapes and prints the same
//! JSON lines.
//!
//! ```text
//! cargo run --release --features tch --example bench_ops -- --device cuda --batch-size 32
//! cargo run --release --example bench_ops -- --device flex --batch-size 4 --iters 3 --warmup 1
//! ```
//!
//! Flags: `--device cpu|cuda|flex` (cpu and cuda are LibTorch), `--batch-size`
//! [32], `--threads` [2], `--iters` [20] timed iterations after `--warmup` [3]
//! untimed ones, `--cases a,b,…` [all].
//!
//! Every case runs on the autodiff device, with one random input made there
//! before timing (it requires a gradient where the model's activation would).
//! `fwd_ms`: the forward alone (train mode: batch norm uses the batch
//! statistics, dropout drops; the graph is recorded, then dropped), as PyTorch
//! with grad enabled. `fwd_bwd_ms`: forward, the sum of the output (the loss
//! for `linear_ce` and `effnet_lite0`) to a scalar, backward. Each is the mean
//! over `--iters`; the device is synchronised before the clock starts and
//! before it stops (CUDA runs asynchronously), as PyTorch's side does with
//! `torch.cuda.synchronize()`. `null` where a case has no backward.
//!
//! One line per case:
//! `{"case","device","batch","fwd_ms","fwd_bwd_ms","iters"}`; a case that
//! fails prints `{"case","device","batch","error"}` and the others still run.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    time::Instant,
};

use burn::{
    nn::{
        BatchNormConfig, DropoutConfig, LinearConfig, PaddingConfig2d,
        conv::{Conv2d, Conv2dConfig},
        loss::CrossEntropyLossConfig,
        pool::AdaptiveAvgPool2dConfig,
    },
    tensor::{Device, Distribution, Int, Tensor, TensorData, activation::relu, ops::PadMode},
};
use histoshard::train::{
    learner::{self, DeviceChoice},
    models::{EfficientNetConfig, LiteVariant},
    ops::relu6::relu6,
};

/// Every case, in the order they run (the same names as the Python side).
const CASES: [&str; 20] = [
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
];

struct Args {
    device: String,
    batch: usize,
    threads: usize,
    iters: usize,
    warmup: usize,
    cases: Vec<String>,
}

fn parse() -> Args {
    let mut a = Args {
        device: "cpu".into(),
        batch: 32,
        threads: 2,
        iters: 20,
        warmup: 3,
        cases: CASES.iter().map(|c| c.to_string()).collect(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        let number = || value.parse::<usize>().expect("a number");
        match pair[0].as_str() {
            "--device" => a.device = value.clone(),
            "--batch-size" => a.batch = number(),
            "--threads" => a.threads = number(),
            "--iters" => a.iters = number(),
            "--warmup" => a.warmup = number(),
            "--cases" => a.cases = value.split(',').map(str::to_string).collect(),
            other => panic!("unknown flag {other}"),
        }
    }
    for c in &a.cases {
        assert!(CASES.contains(&c.as_str()), "unknown case {c}");
    }
    assert!(
        a.iters > 0 && a.batch > 0,
        "--iters and --batch-size must be positive"
    );
    a
}

fn main() {
    // As `train` and bench_train do (src/alloc.rs); HISTOSHARD_DEFAULT_MALLOC=1 leaves it.
    if std::env::var_os("HISTOSHARD_DEFAULT_MALLOC").is_none() {
        histoshard::alloc::keep_freed_memory();
    }
    let a = parse();
    learner::set_compute_threads(a.threads);
    let choice: DeviceChoice = a.device.parse().expect("a device");
    let base = choice.device().expect("the device exists");
    base.seed(0);
    let ad = base.clone().autodiff();
    let device_name = match choice.resolve() {
        DeviceChoice::Cuda(_) => "cuda".to_string(),
        other => other.to_string(),
    };
    for case in CASES.iter().filter(|c| a.cases.iter().any(|x| x == *c)) {
        let outcome = catch_unwind(AssertUnwindSafe(|| run_case(case, &a, &base, &ad)));
        match outcome {
            Ok((fwd, fwd_bwd)) => println!(
                "{{\"case\":\"{case}\",\"device\":\"{device_name}\",\"batch\":{},\"fwd_ms\":{},\"fwd_bwd_ms\":{},\"iters\":{}}}",
                a.batch,
                ms(fwd),
                ms(fwd_bwd),
                a.iters
            ),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!(
                    "{{\"case\":\"{case}\",\"device\":\"{device_name}\",\"batch\":{},\"error\":{:?}}}",
                    a.batch, msg
                );
            }
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("null".into(), |v| format!("{v:.3}"))
}

/// Mean milliseconds of `step(backward)` over `iters`, after `warmup` untimed
/// calls; the device is synchronised before the clock starts and stops.
fn time(a: &Args, device: &Device, backward: bool, step: &mut dyn FnMut(bool)) -> f64 {
    for _ in 0..a.warmup {
        step(backward);
    }
    device.sync().expect("the device synchronises");
    let started = Instant::now();
    for _ in 0..a.iters {
        step(backward);
    }
    device.sync().expect("the device synchronises");
    1000.0 * started.elapsed().as_secs_f64() / a.iters as f64
}

/// Forward only, or the output summed to a scalar and differentiated.
fn finish<const D: usize>(y: Tensor<D>, backward: bool) {
    if backward {
        let _grads = y.sum().backward();
    }
}

fn randn<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// A bias-free convolution as EfficientNet's (`groups` = `channels[0]` for a
/// depthwise one), TF "SAME" padding unless `padding` is given.
fn conv(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    groups: usize,
    padding: Option<usize>,
    device: &Device,
) -> Conv2d {
    let padding = match padding {
        Some(p) => PaddingConfig2d::Explicit(p, p, p, p),
        None => PaddingConfig2d::Same,
    };
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(padding)
        .with_bias(false)
        .init(device)
}

/// (fwd ms, fwd+bwd ms) of one case.
fn run_case(case: &str, a: &Args, base: &Device, ad: &Device) -> (Option<f64>, Option<f64>) {
    let b = a.batch;
    // The input of a case: on the autodiff device; `grad` where the model's
    // activation would need one.
    let input = |shape: [usize; 4], grad: bool| {
        let x = randn(shape, ad);
        if grad { x.require_grad() } else { x }
    };
    let mut step: Box<dyn FnMut(bool)> = match case {
        "conv3x3_s2_dense" | "dw3x3_s1" | "dw3x3_s2" | "dw3x3_s2_sym" | "dw5x5_s2"
        | "pw1x1_16_96" | "pw1x1_32_16" | "pw1x1_96_24" => {
            // (in, out, kernel, stride, groups, explicit padding, side, input grad)
            let (cin, cout, k, s, g, p, side, grad) = match case {
                "conv3x3_s2_dense" => (3, 32, 3, 2, 1, None, 224, false),
                "dw3x3_s1" => (32, 32, 3, 1, 32, None, 112, true),
                "dw3x3_s2" => (96, 96, 3, 2, 96, None, 112, true),
                "dw3x3_s2_sym" => (96, 96, 3, 2, 96, Some(1), 112, true),
                "dw5x5_s2" => (144, 144, 5, 2, 144, None, 56, true),
                "pw1x1_16_96" => (16, 96, 1, 1, 1, None, 112, true),
                "pw1x1_32_16" => (32, 16, 1, 1, 1, None, 112, true),
                _ => (96, 24, 1, 1, 1, None, 56, true),
            };
            let m = conv([cin, cout], k, s, g, p, ad);
            let x = input([b, cin, side, side], grad);
            Box::new(move |bwd| finish(m.forward(x.clone()), bwd))
        }
        "pad_asym" => {
            // What `PaddingConfig2d::Same` does before dw3x3_s2's convolution.
            let x = input([b, 96, 112, 112], true);
            Box::new(move |bwd| {
                finish(x.clone().pad([(0, 1), (0, 1)], PadMode::Constant(0.0)), bwd)
            })
        }
        "full" => {
            // A constant tensor the size of pad_asym's output, on the plain device.
            let base = base.clone();
            let step = move |_bwd: bool| {
                let _t = Tensor::<4>::full([b, 96, 113, 113], 0.0, &base);
            };
            let fwd = time(a, ad, false, &mut { step });
            return (Some(fwd), None);
        }
        "bn_train" => {
            let m = BatchNormConfig::new(32)
                .with_epsilon(1e-3)
                .with_momentum(0.01)
                .init(ad);
            let x = input([b, 32, 112, 112], true);
            Box::new(move |bwd| finish(m.forward(x.clone()), bwd))
        }
        "relu6" => {
            let x = input([b, 32, 112, 112], true);
            Box::new(move |bwd| finish(relu6(x.clone()), bwd))
        }
        "relu" => {
            let x = input([b, 32, 112, 112], true);
            Box::new(move |bwd| finish(relu(x.clone()), bwd))
        }
        "add" => {
            let x = input([b, 32, 112, 112], true);
            let y = input([b, 32, 112, 112], true);
            Box::new(move |bwd| finish(x.clone() + y.clone(), bwd))
        }
        "sum" => {
            // The reduction every other case's backward starts from.
            let x = input([b, 32, 112, 112], true);
            Box::new(move |bwd| finish(x.clone().sum(), bwd))
        }
        "avgpool" => {
            let m = AdaptiveAvgPool2dConfig::new([1, 1]).init();
            let x = input([b, 1280, 7, 7], true);
            Box::new(move |bwd| finish(m.forward(x.clone()), bwd))
        }
        "dropout" => {
            let m = DropoutConfig::new(0.2).init();
            let x = randn([b, 1280], ad).require_grad();
            Box::new(move |bwd| finish(m.forward(x.clone()), bwd))
        }
        "linear_ce" => {
            let m = LinearConfig::new(1280, 2).init(ad);
            let loss = CrossEntropyLossConfig::new().init(ad);
            let x = randn([b, 1280], ad).require_grad();
            let labels = labels(b, ad);
            Box::new(move |bwd| finish(loss.forward(m.forward(x.clone()), labels.clone()), bwd))
        }
        "effnet_lite0" | "effnet_lite0_s1sym" => {
            // effnet_lite0_s1sym: the same network at 225², where every
            // stride-2 "SAME" padding is symmetric (no separate pad).
            let side = if case == "effnet_lite0" { 224 } else { 225 };
            let m = EfficientNetConfig::new(LiteVariant::Lite0).init(ad);
            let loss = CrossEntropyLossConfig::new().init(ad);
            let x = input([b, 3, side, side], false);
            let labels = labels(b, ad);
            Box::new(move |bwd| {
                let logits = m.forward(x.clone());
                if bwd {
                    finish(loss.forward(logits, labels.clone()), true);
                }
            })
        }
        other => unreachable!("case {other}"),
    };
    let fwd = time(a, ad, false, &mut step);
    let fwd_bwd = time(a, ad, true, &mut step);
    (Some(fwd), Some(fwd_bwd))
}

fn labels(batch: usize, device: &Device) -> Tensor<1, Int> {
    let y: Vec<i64> = (0..batch as i64).map(|i| i % 2).collect();
    Tensor::from_data(TensorData::new(y, [batch]), device)
}
