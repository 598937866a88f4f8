//! Training-step and loader throughput, the Rust side of
//! `scripts/bench_train.sh` (PyTorch's side: `scripts/bench_torch_train.py`,
//! which takes the same flags and prints the same JSON line).
//!
//! Step mode: one random batch made on the device before timing; each step
//! is forward (train mode) → cross-entropy → backward → Adam (lr 1e-3),
//! reading the loss back as the trainer does; `--warmup` untimed steps first.
//! `--channels-last true` lays the batch out in memory as [n, h, w, c] and
//! views it as [n, c, h, w]: PyTorch's channels-last memory format, which
//! LibTorch's kernels carry on where they can (`bench_torch_train.py
//! --channels-last` is PyTorch's side).
//!
//! ```text
//! cargo run --release --example bench_train -- --model cnn --batch-size 32 --size 224 --device flex
//! cargo run --release --example bench_train -- --loader DATA --batch-size 32 --workers 2
//! ```
//!
//! `HISTOSHARD_DEFAULT_MALLOC=1` leaves glibc's allocator settings alone
//! (what `train` changes: `src/alloc.rs`), to measure their effect.
//!
//! `HISTOSHARD_PERF_CTL=FIFO` writes `enable` to that perf control FIFO when
//! the timed steps start and `disable` when they end, so that
//! `perf record --control fifo:FIFO -D -1` samples only them
//! (`scripts/profile_train.sh`). `HISTOSHARD_IN_POOL=1` runs the steps on a
//! worker thread of flex's pool rather than the main thread.
//!
//! Features mode (`--features true`): the pooled-feature pass of the frozen
//! backbone (what `train`'s feature cache, `evaluate` and `predict` run) on
//! the inner backend, batch norm as it is against folded into the
//! convolutions (`EfficientNet::folded`), alternated `--steps` times each
//! after `--warmup`; one JSON line per variant, and their largest relative
//! difference.
//!
//! Loader mode: one epoch of a prepared folder's `train` split through the
//! trainer's streaming loader (read, CRC, shuffle buffer, PNG decode,
//! normalise, batch), no model: the images per second it can feed.

use std::time::Instant;

use burn::{
    module::Module,
    nn::loss::CrossEntropyLossConfig,
    optim::{AdamConfig, GradientsParams},
    tensor::{Int, Tensor, TensorData},
};
use histoshard::train::{
    data::{Dataset, LoaderConfig, Selection},
    learner::{self, DeviceChoice},
    models::{Backbone as _, Model, ModelKind, ModelSpec},
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
    features: bool,
    channels_last: bool,
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
        features: false,
        channels_last: false,
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
            "--features" => a.features = value == "true",
            "--channels-last" => a.channels_last = value == "true",
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
        None if a.features => features(&a),
        // The step on a worker of flex's rayon pool, which then runs its
        // share of every parallel kernel itself: its call stacks say which
        // operation a kernel serves (scripts/profile_train.sh).
        None if std::env::var_os("HISTOSHARD_IN_POOL").is_some_and(|v| !v.is_empty()) => {
            rayon::scope(|_| steps(&a))
        }
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
    let images = if a.channels_last {
        // The values in [n, h, w, c] order, viewed as [n, c, h, w].
        Tensor::<4>::from_data(TensorData::new(x, [a.batch, a.size, a.size, 3]), &device)
            .permute([0, 3, 1, 2])
    } else {
        Tensor::<4>::from_data(TensorData::new(x, [a.batch, 3, a.size, a.size]), &device)
    };
    let labels = Tensor::<1, Int>::from_data(TensorData::new(y, [a.batch]), &device);
    let mut started = Instant::now();
    let mut cpu_started = cpu_seconds();
    let perf = std::env::var_os("HISTOSHARD_PERF_CTL");
    for step in 0..a.warmup + a.steps {
        if step == a.warmup {
            perf_control(perf.as_deref(), "enable");
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
    perf_control(perf.as_deref(), "disable");
    println!(
        "{{\"model\":\"{}\",\"device\":\"{}\",\"backend\":\"{}\",\"threads\":{},\"batch\":{},\"size\":{},\"steps\":{},\"img_per_s\":{:.2},\"ms_per_step\":{:.1},\"cores_used\":{cores:.2},\"channels_last\":{}}}",
        a.model,
        choice,
        choice.backend(),
        a.threads,
        a.batch,
        a.size,
        a.steps,
        (a.batch * a.steps) as f64 / s,
        1000.0 * s / a.steps as f64,
        a.channels_last
    );
}

fn features(a: &Args) {
    let choice: DeviceChoice = a.device.parse().expect("a device");
    let base = choice.device().expect("the device exists");
    base.seed(0);
    // Built on the training device and copied to the inner backend, as the
    // trainer's inference does.
    let model =
        ModelSpec::default_for(ModelKind::EfficientnetLite0, 2).init(&base.clone().autodiff());
    let Model::EfficientNet(net) = model.valid() else {
        panic!("EfficientNet-Lite0 is an EfficientNet");
    };
    let folded = net.folded();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = a.batch * 3 * a.size * a.size;
    let x: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    let images = Tensor::<4>::from_data(TensorData::new(x, [a.batch, 3, a.size, a.size]), &base);
    let plain = |x: Tensor<4>| net.features(x);
    let fold = |x: Tensor<4>| folded.features(x);
    let passes: [(&str, &dyn Fn(Tensor<4>) -> Tensor<2>); 2] =
        [("batch norm", &plain), ("folded", &fold)];
    let read = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().expect("f32 features");
    let want = read(plain(images.clone()));
    let got = read(fold(images.clone()));
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = want
        .iter()
        .zip(&got)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale;
    for (_, pass) in passes {
        for _ in 0..a.warmup {
            read(pass(images.clone()));
        }
    }
    let mut seconds = [0f64; 2];
    let mut cpu = [0f64; 2];
    for _ in 0..a.steps {
        for (i, (_, pass)) in passes.iter().enumerate() {
            let (t, c) = (Instant::now(), cpu_seconds());
            read(pass(images.clone()));
            seconds[i] += t.elapsed().as_secs_f64();
            cpu[i] += cpu_seconds() - c;
        }
    }
    for (i, (name, _)) in passes.iter().enumerate() {
        println!(
            "{{\"mode\":\"features\",\"pass\":\"{name}\",\"device\":\"{}\",\"threads\":{},\"batch\":{},\"size\":{},\"batches\":{},\"img_per_s\":{:.2},\"cores_used\":{:.2},\"max_rel_diff\":{diff:.2e}}}",
            choice,
            a.threads,
            a.batch,
            a.size,
            a.steps,
            (a.batch * a.steps) as f64 / seconds[i],
            cpu[i] / seconds[i]
        );
    }
}

/// Sends `command` to perf's control FIFO, if there is one.
fn perf_control(fifo: Option<&std::ffi::OsStr>, command: &str) {
    use std::io::Write;
    if let Some(path) = fifo {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("the perf control FIFO opens");
        writeln!(f, "{command}").expect("perf reads its control FIFO");
    }
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
