//! histoshard (vendor/README.md, burn-flex change 2): batch norm as three
//! fused kernels.
//!
//! burn-flex 0.22.1 implements none of `batch_norm`, `batch_norm_train` and
//! `batch_norm_train_backward`, so burn's generic defaults ran: about 10
//! broadcast element-wise ops for the forward and 15 for the backward, with
//! the channels swapped to the front (a strided copy of the input, and of the
//! gradient) before every reduction; a quarter of flex's training step
//! (docs/BENCHMARKS.md). Here each is one or two passes over the `(n, c)`
//! planes, in parallel on rayon's threads:
//!
//! - `batch_norm`: `y = (x − mean[c])·scale[c] + β[c]`, with `scale = γ/√(var + ε)`.
//! - `batch_norm_train`: the mean, then the biased variance as the mean of
//!   `(x − mean)²` (two passes, not `E[x²] − mean²`), then `batch_norm`.
//! - `batch_norm_train_backward`, the closed form: `dβ = Σ g`,
//!   `dγ = Σ g·x̂`, `dx = γ/σ · (g − dβ/M − x̂·dγ/M)` with `x̂ = (x − mean)/σ`,
//!   `σ = √(var + ε)` and `M` values per channel.
//!
//! Each plane's sums run in `T` across 16 lanes; the planes' sums are added
//! in `f64`. `f32` and `f64` run natively; `f16` and `bf16` through `f32`.

use crate::ops::module::{cast_from_f32, cast_to_f32};
use crate::ops::par_fill::par_filled;
use crate::{Flex, FlexTensor, Layout};
use alloc::{vec, vec::Vec};
use burn_backend::{
    DType, Element, TensorMetadata,
    ops::{BatchNormTrain, BatchNormTrainBackward},
};
use burn_std::{Bytes, Shape, bf16, f16};
use histoshard_kernels::Real;
use rayon::prelude::*;

/// Planes of fewer values than this are handed to rayon in groups that add
/// up to at least this many, so that `[N, C]` inputs don't make a task per value.
const MIN_TASK: usize = 4096;

/// Batch norm with the given statistics.
pub(crate) fn batch_norm(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    epsilon: f64,
) -> FlexTensor {
    let dtype = x.dtype();
    match dtype {
        DType::F32 => inference::<f32>(x, gamma, beta, mean, variance, epsilon),
        DType::F64 => inference::<f64>(x, gamma, beta, mean, variance, epsilon),
        _ => {
            let [x, gamma, beta, mean, variance] = [x, gamma, beta, mean, variance].map(to_f32);
            from_f32(
                inference::<f32>(x, gamma, beta, mean, variance, epsilon),
                dtype,
            )
        }
    }
}

/// Batch norm with the batch's own statistics, returned as well.
pub(crate) fn batch_norm_train(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    epsilon: f64,
) -> BatchNormTrain<Flex> {
    let dtype = x.dtype();
    let [output, mean, variance] = match dtype {
        DType::F32 => train::<f32>(x, gamma, beta, epsilon),
        DType::F64 => train::<f64>(x, gamma, beta, epsilon),
        _ => train::<f32>(to_f32(x), to_f32(gamma), to_f32(beta), epsilon)
            .map(|t| from_f32(t, dtype)),
    };
    BatchNormTrain::new(output, mean, variance)
}

/// The gradients of [batch_norm_train] with respect to its input, `gamma`
/// and `beta`; `mean` and `variance` are the statistics it returned.
pub(crate) fn batch_norm_train_backward(
    x: FlexTensor,
    gamma: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    epsilon: f64,
    output_grad: FlexTensor,
) -> BatchNormTrainBackward<Flex> {
    let dtype = x.dtype();
    let [x_grad, gamma_grad, beta_grad] = match dtype {
        DType::F32 => backward::<f32>(x, gamma, mean, variance, epsilon, output_grad),
        DType::F64 => backward::<f64>(x, gamma, mean, variance, epsilon, output_grad),
        _ => {
            let [x, gamma, mean, variance, output_grad] =
                [x, gamma, mean, variance, output_grad].map(to_f32);
            backward::<f32>(x, gamma, mean, variance, epsilon, output_grad)
                .map(|t| from_f32(t, dtype))
        }
    };
    BatchNormTrainBackward::new(x_grad, gamma_grad, beta_grad)
}

fn to_f32(tensor: FlexTensor) -> FlexTensor {
    match tensor.dtype() {
        DType::F16 => cast_to_f32(tensor, f16::to_f32),
        DType::BF16 => cast_to_f32(tensor, bf16::to_f32),
        DType::F32 => tensor,
        dtype => panic!("batch norm: unsupported dtype {dtype:?}"),
    }
}

fn from_f32(tensor: FlexTensor, dtype: DType) -> FlexTensor {
    match dtype {
        DType::F16 => cast_from_f32(tensor, f16::from_f32),
        DType::BF16 => cast_from_f32(tensor, bf16::from_f32),
        _ => tensor,
    }
}

/// The input's planes: `channels` of them per batch item, `plane` values each.
struct Planes {
    shape: Shape,
    channels: usize,
    plane: usize,
}

impl Planes {
    fn of(x: &FlexTensor) -> Self {
        let shape = x.shape();
        let channels = shape[1];
        let plane = shape.iter().skip(2).product();
        Self {
            shape,
            channels,
            plane,
        }
    }

    /// Values per channel.
    fn per_channel(&self) -> usize {
        self.shape.num_elements() / self.channels.max(1)
    }

    fn min_len(&self) -> usize {
        MIN_TASK.div_ceil(self.plane.max(1))
    }

    /// Plane `i`'s values in `data`.
    fn plane<'a, T>(&self, data: &'a [T], i: usize) -> &'a [T] {
        &data[i * self.plane..][..self.plane]
    }

    /// `f(plane index, channel)` for every plane, as `[n][c]`.
    fn map<R: Send>(&self, f: impl Fn(usize, usize) -> R + Sync) -> Vec<R> {
        (0..self.shape.num_elements() / self.plane.max(1))
            .into_par_iter()
            .with_min_len(self.min_len())
            .map(|i| f(i, i % self.channels))
            .collect()
    }

    /// Adds `[n][c]` per-plane sums into `[c]`.
    fn per_channel_sums(&self, sums: &[f64]) -> Vec<f64> {
        let mut total = vec![0.0; self.channels];
        for row in sums.chunks_exact(self.channels.max(1)) {
            total.iter_mut().zip(row).for_each(|(t, s)| *t += s);
        }
        total
    }

    /// A new tensor of the input's shape whose every plane `f(plane index,
    /// channel, out)` fills.
    fn fill<T: Real + Element + bytemuck::Pod>(
        &self,
        f: impl Fn(usize, usize, &mut [T]) + Sync,
    ) -> FlexTensor {
        let out = par_filled(
            T::default(),
            self.shape.num_elements(),
            self.plane.max(1),
            self.min_len(),
            |i, plane| f(i, i % self.channels, plane),
        );
        tensor(out, self.shape.clone())
    }
}

fn tensor<T: Element + bytemuck::Pod>(data: Vec<T>, shape: Shape) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape),
        T::dtype(),
    )
}

fn values<T: Real + Element + bytemuck::Pod>(tensor: FlexTensor) -> Vec<f64> {
    tensor
        .into_contiguous()
        .storage::<T>()
        .iter()
        .map(|v| v.to_f64())
        .collect()
}

fn channel_tensor<T: Real + Element + bytemuck::Pod>(values: &[f64]) -> FlexTensor {
    let data = values.iter().map(|&v| T::from_f64(v)).collect();
    tensor::<T>(data, Shape::new([values.len()]))
}

fn inference<T: Real + Element + bytemuck::Pod>(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    epsilon: f64,
) -> FlexTensor {
    let [gamma, beta, mean, variance] = [gamma, beta, mean, variance].map(values::<T>);
    normalize::<T>(x, &gamma, &beta, &mean, &variance, epsilon)
}

fn normalize<T: Real + Element + bytemuck::Pod>(
    x: FlexTensor,
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    variance: &[f64],
    epsilon: f64,
) -> FlexTensor {
    let planes = Planes::of(&x);
    let scale: Vec<f64> = gamma
        .iter()
        .zip(variance)
        .map(|(g, v)| g / (v + epsilon).sqrt())
        .collect();
    let shifted: Vec<T> = mean.iter().map(|&m| T::from_f64(-m)).collect();
    let scale: Vec<T> = scale.iter().map(|&s| T::from_f64(s)).collect();
    let beta: Vec<T> = beta.iter().map(|&b| T::from_f64(b)).collect();
    let x = x.into_contiguous();
    let x = x.storage::<T>();
    // (x − mean)·scale + β, not x·scale + (β − mean·scale): the scale of a
    // channel of (near) zero variance is ~1/√ε, and the second form would
    // cancel two large terms.
    planes.fill::<T>(|i, c, out| {
        let (shifted, scale, beta) = (shifted[c], scale[c], beta[c]);
        for (y, v) in out.iter_mut().zip(planes.plane(x, i)) {
            *y = (*v + shifted) * scale + beta;
        }
    })
}

fn train<T: Real + Element + bytemuck::Pod>(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    epsilon: f64,
) -> [FlexTensor; 3] {
    let x = x.into_contiguous();
    let planes = Planes::of(&x);
    let count = planes.per_channel().max(1) as f64;
    let data = x.storage::<T>();
    let sums = planes.map(|i, _| sum(planes.plane(data, i)));
    let mean: Vec<f64> = planes
        .per_channel_sums(&sums)
        .iter()
        .map(|s| s / count)
        .collect();
    let shifted: Vec<T> = mean.iter().map(|&m| T::from_f64(-m)).collect();
    let squares = planes.map(|i, c| squared_deviations(planes.plane(data, i), shifted[c]));
    let variance: Vec<f64> = planes
        .per_channel_sums(&squares)
        .iter()
        .map(|s| s / count)
        .collect();
    let [gamma, beta] = [gamma, beta].map(values::<T>);
    let output = normalize::<T>(x, &gamma, &beta, &mean, &variance, epsilon);
    [
        output,
        channel_tensor::<T>(&mean),
        channel_tensor::<T>(&variance),
    ]
}

fn backward<T: Real + Element + bytemuck::Pod>(
    x: FlexTensor,
    gamma: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    epsilon: f64,
    output_grad: FlexTensor,
) -> [FlexTensor; 3] {
    let x = x.into_contiguous();
    let grad = output_grad.into_contiguous();
    let planes = Planes::of(&x);
    let count = planes.per_channel().max(1) as f64;
    let [gamma, mean, variance] = [gamma, mean, variance].map(values::<T>);
    let (data, g) = (x.storage::<T>(), grad.storage::<T>());
    let shifted: Vec<T> = mean.iter().map(|&m| T::from_f64(-m)).collect();
    // Per plane: Σ g and Σ g·(x − mean).
    let sums = planes.map(|i, c| {
        let g = planes.plane(g, i);
        (sum(g), deviations_dot(planes.plane(data, i), g, shifted[c]))
    });
    let (beta_sums, centred_sums): (Vec<f64>, Vec<f64>) = sums.into_iter().unzip();
    let beta_grad = planes.per_channel_sums(&beta_sums);
    let centred = planes.per_channel_sums(&centred_sums);
    let inv_std: Vec<f64> = variance
        .iter()
        .map(|v| 1.0 / (v + epsilon).sqrt())
        .collect();
    let gamma_grad: Vec<f64> = centred.iter().zip(&inv_std).map(|(s, i)| s * i).collect();
    // dx = k_g·g + k_x·(x − mean) + k_0 per channel (centred first, as in
    // `normalize`).
    let mut k_g = Vec::with_capacity(planes.channels);
    let mut k_x = Vec::with_capacity(planes.channels);
    let mut k_0 = Vec::with_capacity(planes.channels);
    for c in 0..planes.channels {
        let scale = gamma[c] * inv_std[c];
        k_g.push(T::from_f64(scale));
        k_x.push(T::from_f64(-scale * inv_std[c] * gamma_grad[c] / count));
        k_0.push(T::from_f64(-scale * beta_grad[c] / count));
    }
    let x_grad = planes.fill::<T>(|i, c, out| {
        let (x, g) = (planes.plane(data, i), planes.plane(g, i));
        for ((dx, &v), &g) in out.iter_mut().zip(x).zip(g) {
            *dx = k_g[c] * g + k_x[c] * (v + shifted[c]) + k_0[c];
        }
    });
    [
        x_grad,
        channel_tensor::<T>(&gamma_grad),
        channel_tensor::<T>(&beta_grad),
    ]
}

const LANES: usize = 16;

/// `Σ a` in 16 lanes of `T` (vectorised), returned as `f64`.
fn sum<T: Real>(a: &[T]) -> f64 {
    let (chunks, tail) = a.as_chunks::<LANES>();
    let mut lanes = [T::default(); LANES];
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, v)| *l += *v);
    }
    total(lanes, tail.iter().copied())
}

/// `Σ (a + shift)²`, as [sum].
fn squared_deviations<T: Real>(a: &[T], shift: T) -> f64 {
    let (chunks, tail) = a.as_chunks::<LANES>();
    let mut lanes = [T::default(); LANES];
    for chunk in chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            let d = *v + shift;
            *l += d * d;
        }
    }
    total(lanes, tail.iter().map(|&v| (v + shift) * (v + shift)))
}

/// `Σ (a + shift)·b`, as [sum].
fn deviations_dot<T: Real>(a: &[T], b: &[T], shift: T) -> f64 {
    let (a_chunks, a_tail) = a.as_chunks::<LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<LANES>();
    let mut lanes = [T::default(); LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += (*x + shift) * *y;
        }
    }
    total(
        lanes,
        a_tail.iter().zip(b_tail).map(|(&x, &y)| (x + shift) * y),
    )
}

fn total<T: Real>(lanes: [T; LANES], tail: impl Iterator<Item = T>) -> f64 {
    lanes.iter().map(|v| v.to_f64()).sum::<f64>() + tail.map(|v| v.to_f64()).sum::<f64>()
}
