//! histoshard (vendor/README.md, burn-flex change 5): depthwise convolutions
//! (weight `[C, 1, kh, kw]`, `groups == C`) computed directly by
//! `histoshard_kernels::depthwise`, the planes split over rayon's threads,
//! with asymmetric ("SAME") padding read in place.
//!
//! burn-flex 0.22.1's own depthwise kernel works a row of a plane at a time,
//! and its convolutions take symmetric padding only, so an asymmetric one
//! first pads a copy of the input. Fine-tuning EfficientNet-Lite0's last 11
//! blocks on 112-px patches, where the planes are 14×14 to 4×4, spent a
//! quarter of its time in that kernel (docs/BENCHMARKS.md). Every other
//! convolution keeps burn-flex's path. `f32` and `f64` only; the rest keep it
//! too.

use super::{conv_common::add_bias_to_planes, par_fill::par_filled};
use crate::{FlexTensor, Layout};
use alloc::vec::Vec;
use burn_backend::{
    DType, Element, TensorMetadata,
    ops::{ConvOptions, conv::calculate_conv_output_size_asymmetric},
};
use burn_std::{Bytes, ElementAdd, Shape};
use histoshard_kernels::{Real, depthwise::Depthwise};

/// `Ok(conv2d(x, weight, bias, options))` for a depthwise convolution of
/// `f32` or `f64` tensors; every other one comes back as `Err` with its
/// arguments.
#[allow(clippy::type_complexity)]
pub(crate) fn conv2d(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvOptions<2>,
) -> Result<FlexTensor, (FlexTensor, FlexTensor, Option<FlexTensor>)> {
    let depthwise = is_depthwise(&x, &weight, bias.as_ref(), options.groups);
    match x.dtype() {
        DType::F32 if depthwise => Ok(convolve::<f32>(x, weight, bias, options)),
        DType::F64 if depthwise => Ok(convolve::<f64>(x, weight, bias, options)),
        _ => Err((x, weight, bias)),
    }
}

/// Whether `x` (`[N, C, H, W]`) and `weight` (`[C, 1, kh, kw]`) with `groups`
/// make a depthwise convolution or transposed convolution, every tensor of
/// one dtype (also what `depthwise_transpose` takes).
pub(super) fn is_depthwise(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    groups: usize,
) -> bool {
    let (xs, ws) = (x.shape(), weight.shape());
    xs.num_dims() == 4
        && ws.num_dims() == 4
        && ws[1] == 1
        && ws[0] == xs[1]
        && groups == xs[1]
        && weight.dtype() == x.dtype()
        && bias.is_none_or(|b| b.dtype() == x.dtype())
}

/// `units` runs of `unit` values, each range of them written by
/// `compute(first unit, its values)` on rayon's threads, about four ranges a
/// thread; all zeros when there is nothing to compute. How
/// `histoshard_kernels::depthwise`'s three kernels are called (planes for
/// the output and the input gradient, channels for the weight gradient).
pub(super) fn split_over_threads<T: Real>(
    units: usize,
    unit: usize,
    compute: impl Fn(usize, &mut [T]) + Sync + Send,
) -> Vec<T> {
    let per_task = units.div_ceil(rayon::current_num_threads() * 4).max(1);
    par_filled(
        T::default(),
        units * unit,
        per_task * unit,
        1,
        |t, chunk| compute(t * per_task, chunk),
    )
}

fn convolve<T: Real + Element + ElementAdd + bytemuck::Pod>(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let x = x.into_contiguous();
    let weight = weight.into_contiguous();
    let [batch, channels, h, w] = x.layout().shape().dims::<4>();
    let [_, _, kh, kw] = weight.layout().shape().dims::<4>();
    let out = [(0, h, kh), (1, w, kw)].map(|(k, size, kernel)| {
        calculate_conv_output_size_asymmetric(
            kernel,
            options.stride[k],
            options.padding[k],
            options.dilation[k],
            size,
        )
    });
    let shape = Depthwise {
        batch,
        channels,
        input: [h, w],
        padding: options.padding.map(|(begin, _)| begin),
        kernel: [kh, kw],
        out,
        stride: options.stride,
        dilation: options.dilation,
    };
    let plane = out[0] * out[1];
    let (xs, ws) = (x.storage::<T>(), weight.storage::<T>());
    let bias = bias.map(FlexTensor::into_contiguous);
    let bias = bias.as_ref().map(|b| b.storage::<T>());
    assert!(
        bias.is_none_or(|b| b.len() == channels),
        "depthwise conv2d: a bias of {} values for {channels} channels",
        bias.map_or(0, <[T]>::len)
    );
    // Change 11: each task adds the bias to the planes it has just computed.
    let y = split_over_threads(batch * channels, plane, |first, chunk| {
        shape.forward(xs, ws, first, chunk);
        if let Some(bias) = bias {
            add_bias_to_planes(chunk, bias, first, plane);
        }
    });
    FlexTensor::new(
        Bytes::from_elems(y),
        Layout::contiguous(Shape::new([batch, channels, out[0], out[1]])),
        T::dtype(),
    )
}
