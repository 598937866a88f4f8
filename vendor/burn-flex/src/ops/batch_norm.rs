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
//! in `f64`, in batch order. `f32` and `f64` run natively; `f16` and `bf16`
//! through `f32`.
//!
//! histoshard (burn-flex change 7): each task takes whole channels and runs
//! every pass over a channel's planes before the next channel, while they
//! are in cache — not a pass over the whole tensor for each sum and for the
//! output. The same operations in the same order: the same bits.
//!
//! histoshard (burn-flex change 10): and, before it computes a channel,
//! prefetches the next channel's planes ([`Planes::prefetch`]).

use crate::ops::module::{cast_from_f32, cast_to_f32};
use crate::ops::par_fill::{ClassChunks, par_filled_by_class};
use crate::{Flex, FlexTensor, Layout};
use alloc::vec::Vec;
use burn_backend::{
    DType, Element, TensorMetadata,
    ops::{BatchNormTrain, BatchNormTrainBackward},
};
use burn_std::{Bytes, Shape, bf16, f16};
use histoshard_kernels::Real;

/// Channels of fewer values than this are handed to rayon in groups that
/// add up to at least this many, so that `[N, C]` inputs don't make a task
/// per channel of a few values.
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
        DType::F32 => train::<f32>(x, gamma, beta, epsilon, None),
        DType::F64 => train::<f64>(x, gamma, beta, epsilon, None),
        _ => train::<f32>(to_f32(x), to_f32(gamma), to_f32(beta), epsilon, None)
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
        DType::F32 => backward::<f32>(x, gamma, mean, variance, epsilon, output_grad, None),
        DType::F64 => backward::<f64>(x, gamma, mean, variance, epsilon, output_grad, None),
        _ => {
            let [x, gamma, mean, variance, output_grad] =
                [x, gamma, mean, variance, output_grad].map(to_f32);
            backward::<f32>(x, gamma, mean, variance, epsilon, output_grad, None)
                .map(|t| from_f32(t, dtype))
        }
    };
    BatchNormTrainBackward::new(x_grad, gamma_grad, beta_grad)
}

/// histoshard (vendor/README.md, burn-flex change 9): [batch_norm_train]
/// with its output clamped to `[low, high]` in the same pass (ReLU6 is
/// `[0, 6]`), for a backend extension to record as one step.
pub fn batch_norm_train_clamped(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    epsilon: f64,
    low: f64,
    high: f64,
) -> BatchNormTrain<Flex> {
    let dtype = x.dtype();
    let [output, mean, variance] = match dtype {
        DType::F32 => train::<f32>(x, gamma, beta, epsilon, Some(Clamp::new(low, high))),
        DType::F64 => train::<f64>(x, gamma, beta, epsilon, Some(Clamp::new(low, high))),
        _ => train::<f32>(
            to_f32(x),
            to_f32(gamma),
            to_f32(beta),
            epsilon,
            Some(Clamp::new(low, high)),
        )
        .map(|t| from_f32(t, dtype)),
    };
    BatchNormTrain::new(output, mean, variance)
}

/// The gradients of [batch_norm_train_clamped], given its `output`: the
/// gradient passes where the output lies strictly inside `(low, high)` (a
/// NaN passes, as in PyTorch's `hardtanh_backward`), then
/// [batch_norm_train_backward]'s closed form, in the same pass.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_clamped_backward(
    x: FlexTensor,
    output: FlexTensor,
    gamma: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    epsilon: f64,
    low: f64,
    high: f64,
    output_grad: FlexTensor,
) -> BatchNormTrainBackward<Flex> {
    let dtype = x.dtype();
    let [x_grad, gamma_grad, beta_grad] = match dtype {
        DType::F32 => backward::<f32>(
            x,
            gamma,
            mean,
            variance,
            epsilon,
            output_grad,
            Some((output, Clamp::new(low, high))),
        ),
        DType::F64 => backward::<f64>(
            x,
            gamma,
            mean,
            variance,
            epsilon,
            output_grad,
            Some((output, Clamp::new(low, high))),
        ),
        _ => {
            let [x, output, gamma, mean, variance, output_grad] =
                [x, output, gamma, mean, variance, output_grad].map(to_f32);
            backward::<f32>(
                x,
                gamma,
                mean,
                variance,
                epsilon,
                output_grad,
                Some((output, Clamp::new(low, high))),
            )
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

    /// Planes per channel: the batch.
    fn batch(&self) -> usize {
        self.shape.num_elements() / (self.channels * self.plane).max(1)
    }

    /// Plane `i`'s values in `data`.
    fn plane<'a, T>(&self, data: &'a [T], i: usize) -> &'a [T] {
        &data[i * self.plane..][..self.plane]
    }

    /// Channel `c`'s planes in `data`, in batch order.
    fn channel<'a, T>(
        &'a self,
        data: &'a [T],
        c: usize,
    ) -> impl Iterator<Item = &'a [T]> + Clone + 'a {
        (0..self.batch()).map(move |n| self.plane(data, n * self.channels + c))
    }

    /// Asks the CPU to fetch channel `c`'s planes of `data` into its caches
    /// (nothing past the last channel); called for the next channel while
    /// one is computed (change 10). A channel's planes lie a whole image
    /// apart, one to a few cache lines each: a pattern the hardware
    /// prefetchers do not follow.
    fn prefetch<T>(&self, data: &[T], c: usize) {
        if c >= self.channels {
            return;
        }
        for plane in self.channel(data, c) {
            for line in plane.chunks(CACHE_LINE / size_of::<T>().max(1)) {
                prefetch_line(line.as_ptr());
            }
        }
    }

    /// `Σ f(plane)` over channel `c`'s planes in `f64`, in batch order.
    fn channel_sum<T>(&self, data: &[T], c: usize, f: impl Fn(&[T]) -> f64) -> f64 {
        self.channel(data, c)
            .fold(0.0, |total, plane| total + f(plane))
    }

    /// A new tensor of the input's shape, filled a channel at a time on
    /// rayon's threads: `f(channel, planes)` fills the channel's planes (in
    /// batch order) and returns what is collected per channel. Before each
    /// channel, the next one's planes of each of `reads` (the tensors `f`
    /// reads, of the input's shape) are prefetched. Channels of fewer values
    /// than [`MIN_TASK`] go to a task together.
    fn fill_channels<T: Real + Element + bytemuck::Pod, R: Send>(
        &self,
        reads: &[&[T]],
        f: impl Fn(usize, &mut ClassChunks<'_, T>) -> R + Sync,
    ) -> (FlexTensor, Vec<R>) {
        let min_channels = MIN_TASK.div_ceil(self.per_channel().max(1));
        let (out, per_channel) = par_filled_by_class(
            T::default(),
            self.shape.num_elements(),
            self.plane,
            self.channels,
            min_channels,
            |c, out| {
                for data in reads {
                    self.prefetch(data, c + 1);
                }
                f(c, out)
            },
        );
        (tensor(out, self.shape.clone()), per_channel)
    }
}

/// One channel's `y = (x − mean)·scale + β`.
struct Normalize<T> {
    shifted: T,
    scale: T,
    beta: T,
}

impl<T: Real + PartialOrd> Normalize<T> {
    /// `scale = γ/√(var + ε)`, in `f64`.
    fn new(gamma: f64, beta: f64, mean: f64, variance: f64, epsilon: f64) -> Self {
        Self {
            shifted: T::from_f64(-mean),
            scale: T::from_f64(gamma / (variance + epsilon).sqrt()),
            beta: T::from_f64(beta),
        }
    }

    /// Channel `c`'s planes of `data`, normalised into its planes of `out`
    /// (then clamped, if `clamp` says so).
    fn write_channel(
        &self,
        planes: &Planes,
        data: &[T],
        c: usize,
        out: &mut ClassChunks<'_, T>,
        clamp: Option<Clamp<T>>,
    ) {
        for (out, x) in out.zip(planes.channel(data, c)) {
            match clamp {
                None => self.write(x, out, |y| y),
                Some(clamp) => self.write(x, out, |y| clamp.apply(y)),
            }
        }
    }

    /// `then((x − mean)·scale + β)`, not x·scale + (β − mean·scale): the
    /// scale of a channel of (near) zero variance is ~1/√ε, and the second
    /// form would cancel two large terms.
    #[inline(always)]
    fn write(&self, x: &[T], out: &mut [T], then: impl Fn(T) -> T) {
        for (y, v) in out.iter_mut().zip(x) {
            *y = then((*v + self.shifted) * self.scale + self.beta);
        }
    }
}

/// histoshard (change 9): an activation clamped to `[low, high]` after the
/// norm, forward and backward.
#[derive(Clone, Copy)]
struct Clamp<T> {
    low: T,
    high: T,
}

impl<T: Real + PartialOrd> Clamp<T> {
    fn new(low: f64, high: f64) -> Self {
        Self {
            low: T::from_f64(low),
            high: T::from_f64(high),
        }
    }

    /// min(max(v, low), high), a NaN kept; selects, no branches (histoshard's
    /// ReLU6 kernel, `src/train/ops/relu6.rs`).
    #[inline(always)]
    fn apply(self, v: T) -> T {
        let low = if v < self.low { self.low } else { v };
        if low > self.high { self.high } else { low }
    }

    /// `g` where the clamped output `y` lies strictly inside `(low, high)`,
    /// else 0: the same mask as from the value before the clamp.
    #[inline(always)]
    fn pass(self, y: T, g: T) -> T {
        if (y <= self.low) | (y >= self.high) {
            T::default()
        } else {
            g
        }
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

fn inference<T: Real + Element + PartialOrd + bytemuck::Pod>(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    epsilon: f64,
) -> FlexTensor {
    let [gamma, beta, mean, variance] = [gamma, beta, mean, variance].map(values::<T>);
    let x = x.into_contiguous();
    let planes = Planes::of(&x);
    let data = x.storage::<T>();
    let (output, _) = planes.fill_channels::<T, ()>(&[data], |c, out| {
        let normalize = Normalize::new(gamma[c], beta[c], mean[c], variance[c], epsilon);
        normalize.write_channel(&planes, data, c, out, None);
    });
    output
}

fn train<T: Real + Element + PartialOrd + bytemuck::Pod>(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    epsilon: f64,
    clamp: Option<Clamp<T>>,
) -> [FlexTensor; 3] {
    let x = x.into_contiguous();
    let planes = Planes::of(&x);
    let count = planes.per_channel().max(1) as f64;
    let data = x.storage::<T>();
    let [gamma, beta] = [gamma, beta].map(values::<T>);
    // The mean, then the mean of (x − mean)², then the output.
    let (output, statistics) = planes.fill_channels::<T, (f64, f64)>(&[data], |c, out| {
        let mean = planes.channel_sum(data, c, sum) / count;
        let shifted = T::from_f64(-mean);
        let variance =
            planes.channel_sum(data, c, |plane| squared_deviations(plane, shifted)) / count;
        let normalize = Normalize::new(gamma[c], beta[c], mean, variance, epsilon);
        normalize.write_channel(&planes, data, c, out, clamp);
        (mean, variance)
    });
    let (mean, variance): (Vec<f64>, Vec<f64>) = statistics.into_iter().unzip();
    [
        output,
        channel_tensor::<T>(&mean),
        channel_tensor::<T>(&variance),
    ]
}

/// The closed form; with `clamped`, the output of the clamp and its bounds,
/// the gradient masked first (change 9), each channel's masked planes kept
/// for both passes.
#[allow(clippy::too_many_arguments)]
fn backward<T: Real + Element + PartialOrd + bytemuck::Pod>(
    x: FlexTensor,
    gamma: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    epsilon: f64,
    output_grad: FlexTensor,
    clamped: Option<(FlexTensor, Clamp<T>)>,
) -> [FlexTensor; 3] {
    let x = x.into_contiguous();
    let grad = output_grad.into_contiguous();
    let clamped = clamped.map(|(output, clamp)| (output.into_contiguous(), clamp));
    let planes = Planes::of(&x);
    let count = planes.per_channel().max(1) as f64;
    let [gamma, mean, variance] = [gamma, mean, variance].map(values::<T>);
    let (data, g) = (x.storage::<T>(), grad.storage::<T>());
    let clamped = clamped
        .as_ref()
        .map(|(output, clamp)| (output.storage::<T>(), *clamp));
    let reads: Vec<&[T]> = [Some(data), Some(g), clamped.map(|(y, _)| y)]
        .into_iter()
        .flatten()
        .collect();
    let (x_grad, sums) = planes.fill_channels::<T, (f64, f64)>(&reads, |c, out| {
        let channel = ChannelBackward {
            planes: &planes,
            data,
            c,
            shifted: T::from_f64(-mean[c]),
            inv_std: 1.0 / (variance[c] + epsilon).sqrt(),
            gamma: gamma[c],
            count,
        };
        match clamped {
            None => channel.run(planes.channel(g, c), out),
            Some((y, clamp)) => {
                let mut masked = Vec::with_capacity(planes.batch() * planes.plane);
                for (g, y) in planes.channel(g, c).zip(planes.channel(y, c)) {
                    masked.extend(g.iter().zip(y).map(|(&g, &y)| clamp.pass(y, g)));
                }
                channel.run(masked.chunks_exact(planes.plane.max(1)), out)
            }
        }
    });
    let (gamma_grad, beta_grad): (Vec<f64>, Vec<f64>) = sums.into_iter().unzip();
    [
        x_grad,
        channel_tensor::<T>(&gamma_grad),
        channel_tensor::<T>(&beta_grad),
    ]
}

/// One channel of the backward: its statistics and where its input lies.
struct ChannelBackward<'a, T> {
    planes: &'a Planes,
    data: &'a [T],
    c: usize,
    shifted: T,
    inv_std: f64,
    gamma: f64,
    count: f64,
}

impl<T: Real> ChannelBackward<'_, T> {
    /// The channel's input gradient into `out`, given its output gradient's
    /// planes in batch order; returns (dγ, dβ).
    fn run<'g>(
        &self,
        grads: impl Iterator<Item = &'g [T]> + Clone,
        out: &mut ClassChunks<'_, T>,
    ) -> (f64, f64)
    where
        T: 'g,
    {
        let (planes, shifted) = (self.planes, self.shifted);
        // Σ g and Σ g·(x − mean), each plane's sum added in batch order.
        let (mut beta_grad, mut centred) = (0.0, 0.0);
        for (x, g) in planes.channel(self.data, self.c).zip(grads.clone()) {
            beta_grad += sum(g);
            centred += deviations_dot(x, g, shifted);
        }
        let gamma_grad = centred * self.inv_std;
        // dx = k_g·g + k_x·(x − mean) + k_0 (centred first, as in `Normalize`).
        let scale = self.gamma * self.inv_std;
        let k_g = T::from_f64(scale);
        let k_x = T::from_f64(-scale * self.inv_std * gamma_grad / self.count);
        let k_0 = T::from_f64(-scale * beta_grad / self.count);
        for (out, (x, g)) in out.zip(planes.channel(self.data, self.c).zip(grads)) {
            for ((dx, &v), &g) in out.iter_mut().zip(x).zip(g) {
                *dx = k_g * g + k_x * (v + shifted) + k_0;
            }
        }
        (gamma_grad, beta_grad)
    }
}

const LANES: usize = 16;

/// Bytes in a cache line of the x86-64 CPUs this was measured on.
const CACHE_LINE: usize = 64;

/// A hint to fetch the line that holds `p` into every cache level; nothing
/// on other architectures.
#[inline(always)]
fn prefetch_line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing architecturally and
    // cannot fault, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

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
