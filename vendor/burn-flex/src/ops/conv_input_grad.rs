//! histoshard (vendor/README.md, burn-flex change 4): the input gradient of a
//! 2D convolution with asymmetric padding, without a padded copy of the input.
//!
//! burn's default `conv2d_x_backward` pads the input only to learn the padded
//! size, runs the transposed convolution over the whole padded plane, then
//! crops it. TensorFlow's "SAME" stride-2 convolutions of EfficientNet pad
//! asymmetrically, and those copies were part of the padding share of flex's
//! training step (docs/BENCHMARKS.md). Here, as in vendor/burn-tch's change
//! 4: the output padding is the default's (burn's `calculate_padding_out` on
//! the padded size), the transposed convolution crops the padding both sides
//! share itself, and a narrow takes the input's rows and columns out of what
//! is left. The same function as the default (tests/flex_kernels.rs checks
//! both gradients against the definition on asymmetric paddings, more before
//! than after among them).

use crate::{Flex, FlexTensor};
use burn_backend::{
    TensorMetadata,
    ops::{ConvOptions, ConvTransposeOptions, ModuleOps, conv::calculate_padding_out},
};

/// The gradient of `conv2d(x, weight, options)` with respect to `x`, given
/// the gradient of its output; `x` is read for its shape only.
pub(crate) fn conv2d_x_backward(
    x: FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: ConvOptions<2>,
) -> FlexTensor {
    // histoshard (vendor/README.md, burn-flex change 8): a pointwise
    // convolution's input gradient is one product per batch item.
    #[cfg(feature = "rayon")]
    if is_pointwise(&weight, &options)
        && let Some(grad) = crate::ops::pointwise::input_grad(&weight, &output_grad)
    {
        return grad;
    }
    let [_, _, h, w] = x.shape().dims::<4>();
    let [_, _, kh, kw] = weight.shape().dims::<4>();
    let [_, _, oh, ow] = output_grad.shape().dims::<4>();
    let (size_in, kernel, size_out) = ([h, w], [kh, kw], [oh, ow]);
    let mut padding = [0; 2];
    let mut padding_out = [0; 2];
    let mut start = [0; 2];
    for k in 0..2 {
        let (begin, end) = options.padding[k];
        padding[k] = begin.min(end);
        start[k] = begin - padding[k];
        padding_out[k] = calculate_padding_out(
            kernel[k],
            options.stride[k],
            0,
            options.dilation[k],
            size_in[k] + begin + end,
            size_out[k],
        );
    }
    let mut grad = Flex::conv_transpose2d(
        output_grad,
        weight,
        None,
        ConvTransposeOptions::new(
            options.stride,
            padding,
            padding_out,
            options.dilation,
            options.groups,
        ),
    );
    for k in 0..2 {
        if grad.shape()[k + 2] != size_in[k] {
            grad = grad.narrow(k + 2, start[k], size_in[k]);
        }
    }
    grad
}

/// A 1×1, stride-1, unpadded, ungrouped convolution: its input gradient is
/// the weight's transpose times each item's output gradient.
#[cfg(feature = "rayon")]
fn is_pointwise(weight: &FlexTensor, options: &ConvOptions<2>) -> bool {
    let shape = weight.shape();
    shape[2] == 1
        && shape[3] == 1
        && options.stride == [1, 1]
        && options.padding == [(0, 0), (0, 0)]
        && options.groups == 1
}
