//! The optimizer step alone: burn's `Adam` against histoshard's `FusedAdam`
//! (`src/train/ops/adam.rs`) on every parameter of EfficientNet-Lite0
//! (3.4 M values), the update `train` makes after
//! each fine-tuning batch. Both run on the same gradients from the same
//! start and must give the same weights; each is timed over `--iters` steps
//! after one untimed step (the first creates the moments, the same code in
//! both).
//!
//! ```text
//! cargo run --release --example bench_adam -- --device flex --threads 2 --iters 20
//! ```
//!
//! One JSON line per optimizer: `{"optimizer","device","threads","params","step_ms"}`
//! (`step_ms`: the mean wall time of one step of the whole model).

use std::time::Instant;

use burn::{
    module::Module,
    optim::{AdamConfig, GradientsParams, ModuleOptimizer},
    tensor::{Distribution, Tensor},
};
use histoshard::train::{
    learner::{self, DeviceChoice},
    models::{EfficientNet, EfficientNetConfig, LiteVariant},
    ops::adam::FusedAdam,
};

fn main() {
    histoshard::alloc::keep_freed_memory();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: &str| -> String {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let threads: usize = flag("--threads", "2").parse().expect("--threads N");
    let iters: usize = flag("--iters", "20").parse().expect("--iters N");
    let choice: DeviceChoice = flag("--device", "flex").parse().expect("a device");
    learner::set_compute_threads(threads);
    let device = choice.device().expect("the device exists").autodiff();
    device.seed(0);
    let x = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);

    let mut outputs = Vec::new();
    for (name, optim) in [
        ("burn Adam", AdamConfig::new().with_epsilon(1e-5).init()),
        ("FusedAdam", ModuleOptimizer::from(FusedAdam::new(None))),
    ] {
        // The same start and dropout masks in both runs (a clone of one
        // model would share its batch norms' running statistics).
        device.seed(1);
        let start = EfficientNetConfig::new(LiteVariant::Lite0).init(&device);
        let params = start.num_params();
        let (model, ms) = time(start, optim, &x, iters);
        println!(
            "{{\"optimizer\":\"{name}\",\"device\":\"{}\",\"threads\":{threads},\"params\":{params},\"step_ms\":{ms:.2}}}",
            choice.resolve()
        );
        let logits = model.forward(x.clone());
        outputs.push(logits.into_data().try_to_vec::<f32>().expect("f32 logits"));
    }
    assert_eq!(outputs[0], outputs[1], "the two optimizers' weights differ");
}

/// Steps `optim` `iters + 1` times, each on the gradient of the model's
/// summed logits for `x` (untimed), timing all steps but the first; the
/// model it ends with and the mean step in ms.
fn time(
    mut model: EfficientNet,
    mut optim: ModuleOptimizer,
    x: &Tensor<4>,
    iters: usize,
) -> (EfficientNet, f64) {
    let mut elapsed = 0.0;
    for i in 0..=iters {
        let grads = GradientsParams::from_grads(model.forward(x.clone()).sum().backward(), &model);
        let clock = Instant::now();
        model = optim.step(1e-4, model, grads);
        if i > 0 {
            elapsed += clock.elapsed().as_secs_f64();
        }
    }
    (model, 1e3 * elapsed / iters as f64)
}
