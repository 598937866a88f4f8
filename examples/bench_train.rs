//! Training-step and loader throughput, the Rust side of
//! `scripts/bench_train.sh` (PyTorch's side: `scripts/bench_torch_train.py`,
//! which takes the same flags and prints the same JSON line).
//!
//! Step mode: one random batch made on the device before timing; each step
//! is forward (train mode) → cross-entropy → backward → Adam (lr 1e-3),
//! reading the loss back as the trainer does; `--warmup` untimed steps first.
//!
//! ```text
//! cargo run --release --example bench_train -- --model cnn --batch-size 32 --size 224 --device flex
//! cargo run --release --example bench_train -- --loader DATA --batch-size 32 --workers 2
//! ```
//!
//! `HISTOSHARD_DEFAULT_MALLOC=1` leaves glibc's allocator settings alone
//! (what `train` changes: `src/alloc.rs`), to measure their effect.
//!
//! Loader mode: one epoch of a prepared folder's `train` split through the
//! trainer's streaming loader (read, CRC, shuffle buffer, PNG decode,
//! normalise, batch), no model: the images per second it can feed.

use std::time::Instant;

use burn::{
    nn::loss::CrossEntropyLossConfig,
    optim::{AdamConfig, GradientsParams},
    tensor::{Int, Tensor, TensorData},
};
use histoshard::train::{
    data::{Dataset, LoaderConfig, Selection},
    learner::{self, DeviceChoice},
    models::{ModelKind, ModelSpec},
};
use rand::{Rng, SeedableRng};

struct Args {
    model: String,
    batch: usize,
    size: usize,
    steps: usize,
    warmup: usize,
    threads: usize,
    device: String,
    loader: Option<String>,
    workers: usize,
}

fn parse() -> Args {
    let mut a = Args {
        model: "cnn".into(),
        batch: 32,
        size: 224,
        steps: 20,
        warmup: 3,
        threads: 2,
        device: "cpu".into(),
        loader: None,
        workers: 2,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        let number = || value.parse::<usize>().expect("a number");
        match pair[0].as_str() {
            "--model" => a.model = value.clone(),
            "--batch-size" => a.batch = number(),
            "--size" => a.size = number(),
            "--steps" => a.steps = number(),
            "--warmup" => a.warmup = number(),
            "--threads" => a.threads = number(),
            "--device" => a.device = value.clone(),
            "--loader" => a.loader = Some(value.clone()),
            "--workers" => a.workers = number(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn main() {
    if std::env::var_os("HISTOSHARD_DEFAULT_MALLOC").is_none() {
        histoshard::alloc::keep_freed_memory();
    }
    let a = parse();
    learner::set_compute_threads(a.threads);
    match &a.loader {
        Some(dir) => loader(&a, dir),
        None => steps(&a),
    }
}

fn loader(a: &Args, dir: &str) {
    let data = Dataset::open(dir.as_ref(), &Selection::split("train")).expect("a prepared folder");
    let cfg = LoaderConfig {
        shuffle: true,
        shuffle_buffer: 1024,
        seed: 1,
        workers: a.workers,
        prefetch: 4,
        ..LoaderConfig::eval(
            a.batch,
            None,
            ModelSpec::default_for(ModelKind::Cnn, 2).normalization(),
        )
    };
    let started = Instant::now();
    let mut n = 0usize;
    for batch in data.stream(&cfg, 1).expect("stream starts") {
        n += batch.expect("a batch").len();
    }
    let s = started.elapsed().as_secs_f64();
    println!(
        "{{\"mode\":\"loader\",\"workers\":{},\"batch\":{},\"images\":{n},\"img_per_s\":{:.1}}}",
        a.workers,
        a.batch,
        n as f64 / s
    );
}

fn steps(a: &Args) {
    let choice: DeviceChoice = a.device.parse().expect("a device");
    let base = choice.device().expect("the device exists");
    base.seed(0);
    let device = base.clone().autodiff();
    let kind = match a.model.as_str() {
        "cnn" => ModelKind::Cnn,
        "mlp" => ModelKind::Mlp,
        "efficientnet-lite0" => ModelKind::EfficientnetLite0,
        other => panic!("unknown model {other}"),
    };
    let mut model = ModelSpec::default_for(kind, 2).init(&device);
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = a.batch * 3 * a.size * a.size;
    let x: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    let y: Vec<i64> = (0..a.batch).map(|_| rng.random_range(0..2)).collect();
    let images = Tensor::<4>::from_data(TensorData::new(x, [a.batch, 3, a.size, a.size]), &device);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(y, [a.batch]), &device);
    let mut started = Instant::now();
    let mut cpu_started = cpu_seconds();
    for step in 0..a.warmup + a.steps {
        if step == a.warmup {
            started = Instant::now();
            cpu_started = cpu_seconds();
        }
        let logits = model.forward(images.clone());
        let loss = loss_fn.forward(logits, labels.clone());
        let _value: f32 = loss.clone().into_scalar();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }
    let s = started.elapsed().as_secs_f64();
    let cores = (cpu_seconds() - cpu_started) / s;
    println!(
        "{{\"model\":\"{}\",\"device\":\"{}\",\"backend\":\"{}\",\"threads\":{},\"batch\":{},\"size\":{},\"steps\":{},\"img_per_s\":{:.2},\"ms_per_step\":{:.1},\"cores_used\":{cores:.2}}}",
        a.model,
        choice,
        choice.backend(),
        a.threads,
        a.batch,
        a.size,
        a.steps,
        (a.batch * a.steps) as f64 / s,
        1000.0 * s / a.steps as f64
    );
}

/// CPU time of the whole process (every thread), user + system, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}
