//! Adam's update of one parameter as one backend operation ([`AdamOps`]),
//! and [`FusedAdam`], the optimizer that calls it.
//!
//! burn 0.22's `Adam` builds each parameter's update from 13 tensor
//! operations (the two moments, the bias-corrected step, the subtraction),
//! each a pass over the parameter that allocates its result, and flex runs
//! them on one thread (those with a scalar always, those of two tensors
//! below 4 M elements): the optimizer step was a serial stretch of every
//! training step. Here the whole update is one pass on flex, over rayon's
//! threads, in place in the buffers of the parameter and its moments when
//! nothing else holds them (`examples/bench_adam.rs`: 10.5 → 4.5–6.2 ms for
//! EfficientNet-Lite0's 3.4 M parameters on two threads, docs/BENCHMARKS.md).
//!
//! Every value is computed with the same f32 operations in the same order as
//! burn's `Adam` (no fused multiply-adds), so the two give the same weights
//! and moments bit for bit (the test below); the state is burn's own
//! [`AdamState`], so checkpoints and `--resume` are unchanged. Where the
//! kernel does not apply (the first step of a parameter, which creates its
//! state; weight decay; another element type; LibTorch) [`FusedAdam`] runs
//! burn's `Adam` itself, or the composed form of the same operations.
// burn 0.22 deprecates burn-tch, histoshard's LibTorch path, which the
// generated routing names.
#![allow(deprecated)]

use burn::backend::{Backend, backend_extension, tensor::FloatTensor};
use burn::optim::{
    Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, Optimizer,
    decay::WeightDecayConfig,
};
use burn::tensor::{Device, Tensor};

/// burn's `AdamConfig` defaults, named so that the fused and the composed
/// path are built from the same values.
const BETA_1: f32 = 0.9;
const BETA_2: f32 = 0.999;
const EPSILON: f32 = 1e-5;

/// The scalars of one Adam step that change from step to step, computed as
/// burn's `AdaptiveMomentum` does (f32 arithmetic) for step number `time`
/// (1 for the first); β₁, β₂ and their complements are the constants above.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// √(1 − β₂ᵗ) / (1 − β₁ᵗ): both bias corrections in one factor.
    pub correction: f32,
    /// ε·√(1 − β₂ᵗ), added to √v.
    pub epsilon: f32,
    /// The learning rate, as burn's scalar multiplication rounds it.
    pub lr: f32,
}

impl AdamStep {
    pub fn new(time: usize, lr: LearningRate) -> Self {
        let time = i32::try_from(time).unwrap_or(i32::MAX);
        let corrected_sqrt = (1.0 - BETA_2.powi(time)).sqrt();
        Self {
            correction: corrected_sqrt / (1.0 - BETA_1.powi(time)),
            epsilon: EPSILON * corrected_sqrt,
            lr: lr as f32,
        }
    }
}

/// One Adam step of a parameter whose moments exist: the new parameter,
/// first moment and second moment, in that order.
#[backend_extension(Flex: cfg(feature = "flex"), LibTorch: cfg(feature = "tch"))]
pub trait AdamOps: Backend {
    fn adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        step: AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed::<Self>(param, grad, moment_1, moment_2, step)
    }
}

/// burn's `AdaptiveMomentum::transform` and `Adam::step`, operation for
/// operation, on any backend.
fn composed<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    moment_1: FloatTensor<B>,
    moment_2: FloatTensor<B>,
    s: AdamStep,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let moment_1 = B::float_add(
        B::float_mul_scalar(moment_1, BETA_1.into()),
        B::float_mul_scalar(grad.clone(), (1.0 - BETA_1).into()),
    );
    let moment_2 = B::float_add(
        B::float_mul_scalar(moment_2, BETA_2.into()),
        B::float_mul_scalar(B::float_mul(grad.clone(), grad), (1.0 - BETA_2).into()),
    );
    let update = B::float_div(
        B::float_mul_scalar(moment_1.clone(), s.correction.into()),
        B::float_add_scalar(B::float_sqrt(moment_2.clone()), s.epsilon.into()),
    );
    let param = B::float_sub(param, B::float_mul_scalar(update, s.lr.into()));
    (param, moment_1, moment_2)
}

#[cfg(feature = "tch")]
impl AdamOps for burn::backend::LibTorch {}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::{
        DType, Flex, TensorMetadata,
        flex::{FlexTensor, Layout},
    };
    use rayon::prelude::*;

    use super::{AdamOps, AdamStep, BETA_1, BETA_2, composed};

    /// Elements per rayon task (four arrays are read, three written).
    const CHUNK: usize = 1 << 14;

    impl AdamOps for Flex {
        fn adam_step(
            param: FlexTensor,
            grad: FlexTensor,
            moment_1: FlexTensor,
            moment_2: FlexTensor,
            step: AdamStep,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let all_f32 = [&param, &grad, &moment_1, &moment_2]
                .iter()
                .all(|t| t.dtype() == DType::F32);
            let same_shape = [&grad, &moment_1, &moment_2]
                .iter()
                .all(|t| t.shape() == param.shape());
            if !(all_f32 && same_shape) {
                return composed::<Flex>(param, grad, moment_1, moment_2, step);
            }
            let (mut param, grad) = (whole(param), whole(grad));
            let (mut moment_1, mut moment_2) = (whole(moment_1), whole(moment_2));
            update(
                param.storage_mut::<f32>(),
                grad.storage::<f32>(),
                moment_1.storage_mut::<f32>(),
                moment_2.storage_mut::<f32>(),
                step,
            );
            (param, moment_1, moment_2)
        }
    }

    /// `t` as the sole, in-order view of its own buffer (what
    /// `storage_mut` writes through in place when nobody shares it).
    fn whole(t: FlexTensor) -> FlexTensor {
        let layout: &Layout = t.layout();
        let covers = t.is_contiguous()
            && layout.start_offset() == 0
            && t.bytes().len() == layout.num_elements() * size_of::<f32>();
        if covers { t } else { t.to_contiguous() }
    }

    /// The update of every element, burn's operations in burn's order.
    fn update(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], s: AdamStep) {
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                    *m = *m * BETA_1 + g * (1.0 - BETA_1);
                    *v = *v * BETA_2 + (g * g) * (1.0 - BETA_2);
                    let update = (*m * s.correction) / (v.sqrt() + s.epsilon);
                    *p -= update * s.lr;
                }
            });
    }
}

/// burn's Adam with the update of every parameter after its first in one
/// operation ([`AdamOps`]); the same weights, the same state.
#[derive(Clone)]
pub struct FusedAdam {
    composed: Adam,
    decays: bool,
}

impl FusedAdam {
    pub fn new(weight_decay: Option<WeightDecayConfig>) -> Self {
        let decays = weight_decay.is_some();
        let composed = AdamConfig::new()
            .with_beta_1(BETA_1)
            .with_beta_2(BETA_2)
            .with_epsilon(EPSILON)
            .with_weight_decay(weight_decay)
            .build();
        Self { composed, decays }
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let state = match state {
            Some(state) if !self.decays && state.momentum.max_moment_2.is_none() => state,
            other => return self.composed.step(lr, tensor, grad, other),
        };
        use burn::backend::Dispatch;
        let AdaptiveMomentumState {
            time,
            moment_1,
            moment_2,
            ..
        } = state.momentum;
        let time = time + 1;
        let (param, moment_1, moment_2) = <Dispatch as AdamOps>::adam_step(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            moment_1.into_dispatch(),
            moment_2.into_dispatch(),
            AdamStep::new(time, lr),
        );
        let momentum = AdaptiveMomentumState::new(
            time,
            Tensor::from_dispatch(moment_1),
            Tensor::from_dispatch(moment_2),
        );
        (Tensor::from_dispatch(param), Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <Adam as Optimizer>::to_device(state, device)
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::optim::{AdamState, Optimizer};
    use burn::tensor::{Device, Distribution, Tensor};

    use super::FusedAdam;

    fn bits(t: &Tensor<2>) -> Vec<u32> {
        let values = t.to_data().try_to_vec::<f32>().expect("an f32 tensor");
        values.into_iter().map(f32::to_bits).collect()
    }

    /// Twelve steps of both optimizers from the same start, on gradients of
    /// mixed scales (and zeros), give the same parameter and moments to the
    /// last bit, at every step.
    #[test]
    fn fused_adam_is_burns_adam_bit_for_bit() {
        let device = Device::flex();
        let shape = [300, 257];
        let mut fused_param = Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let mut plain_param = fused_param.clone();
        let fused = FusedAdam::new(None);
        // burn's own Adam, built from the same constants.
        let plain = fused.composed.clone();
        let mut fused_state: Option<AdamState<2>> = None;
        let mut plain_state: Option<AdamState<2>> = None;
        for step in 0..12 {
            let scale = [1e-6, 1.0, 1e3][step % 3];
            let grad = Tensor::<2>::random(shape, Distribution::Normal(0.0, scale), &device)
                .mask_fill(
                    Tensor::<2>::random(shape, Distribution::Uniform(0.0, 1.0), &device)
                        .lower_elem(0.1),
                    0.0,
                );
            let lr = 1e-3 / (1 + step) as f64;
            (fused_param, fused_state) = fused.step(lr, fused_param, grad.clone(), fused_state);
            (plain_param, plain_state) = plain.step(lr, plain_param, grad, plain_state);
            let (f, p) = (fused_state.as_ref(), plain_state.as_ref());
            let (Some(f), Some(p)) = (f, p) else {
                panic!("both keep a state");
            };
            assert_eq!(
                bits(&fused_param),
                bits(&plain_param),
                "parameter, step {step}"
            );
            assert_eq!(f.momentum.time, p.momentum.time);
            assert_eq!(bits(&f.momentum.moment_1), bits(&p.momentum.moment_1));
            assert_eq!(bits(&f.momentum.moment_2), bits(&p.momentum.moment_2));
        }
    }
}
