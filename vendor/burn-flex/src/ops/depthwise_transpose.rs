//! histoshard (vendor/README.md, burn-flex change 3): depthwise transposed
//! convolutions (weight `[C, 1, kh, kw]`, `groups == C`), computed directly
//! by `histoshard_kernels::depthwise`, the planes split over rayon's threads.
//!
//! burn computes a convolution's input gradient as a transposed convolution
//! (`conv2d_x_backward`), so a depthwise convolution's input gradient is one
//! of these. burn-flex 0.22.1's `conv_transpose2d` runs them through its
//! general kernel, which spent a quarter of EfficientNet-Lite0's training
//! step there (docs/BENCHMARKS.md). Every other transposed convolution keeps
//! burn-flex's kernel. `f32` and `f64` only; the rest keep it too.

use super::{
    conv_common::add_bias,
    depthwise_forward::{is_depthwise, split_over_threads},
};
use crate::{FlexTensor, Layout};
use burn_backend::{DType, Element, ops::ConvTransposeOptions};
use burn_std::{Bytes, ElementAdd, Shape};
use histoshard_kernels::{Real, depthwise::Depthwise};

/// `Ok(conv_transpose2d(x, weight, bias, options))` for a depthwise transposed
/// convolution of `f32` or `f64` tensors; every other one comes back as `Err`
/// with its arguments.
#[allow(clippy::type_complexity)]
pub(crate) fn conv_transpose2d(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvTransposeOptions<2>,
) -> Result<FlexTensor, (FlexTensor, FlexTensor, Option<FlexTensor>)> {
    let depthwise = is_depthwise(&x, &weight, bias.as_ref(), options.groups);
    match x.dtype() {
        DType::F32 if depthwise => Ok(transpose::<f32>(x, weight, bias, options)),
        DType::F64 if depthwise => Ok(transpose::<f64>(x, weight, bias, options)),
        _ => Err((x, weight, bias)),
    }
}

fn transpose<T: Real + Element + ElementAdd + bytemuck::Pod>(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvTransposeOptions<2>,
) -> FlexTensor {
    let x = x.into_contiguous();
    let weight = weight.into_contiguous();
    let [batch, channels, oh, ow] = x.layout().shape().dims::<4>();
    let [_, _, kh, kw] = weight.layout().shape().dims::<4>();
    let size = |k: usize, out: usize, kernel: usize| {
        ((out.max(1) - 1) * options.stride[k]
            + options.dilation[k] * (kernel - 1)
            + 1
            + options.padding_out[k])
            .saturating_sub(2 * options.padding[k])
    };
    let input = [size(0, oh, kh), size(1, ow, kw)];
    let shape = Depthwise {
        batch,
        channels,
        input,
        padding: options.padding,
        kernel: [kh, kw],
        out: [oh, ow],
        stride: options.stride,
        dilation: options.dilation,
    };
    let plane = input[0] * input[1];
    let (w, g) = (weight.storage::<T>(), x.storage::<T>());
    let mut out = split_over_threads(batch * channels, plane, |first, chunk| {
        shape.input_grad(w, g, first, chunk)
    });
    if let Some(bias) = bias {
        let bias = bias.into_contiguous();
        add_bias(&mut out, bias.storage::<T>(), batch, channels, plane);
    }
    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::new([batch, channels, input[0], input[1]])),
        T::dtype(),
    )
}
