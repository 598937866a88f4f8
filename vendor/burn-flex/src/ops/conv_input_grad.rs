//! histoshard (vendor/README.md, burn-flex change 4): the input gradient of a
//! 2D convolution with asymmetric padding, without a padded copy of the input.
//!
//! burn's default `conv2d_x_backward` pads the input only to learn the padded
//! size, runs the transposed convolution over the whole padded plane, then
//! crops it. TensorFlow's "SAME" stride-2 convolutions of EfficientNet pad
//! asymmetrically, and those copies were part of the padding share of flex's
//! training step (docs/BENCHMARKS.md). Here the transposed convolution crops
//! the padding before the first row and column itself (its own `padding`),
//! and a narrow removes the rows and columns that only the extra padding at
//! the far side made. The same function as the default (tests/flex_kernels.rs
//! checks both gradients against the definition on asymmetric paddings,
//! more before than after among them).

use crate::{Flex, FlexTensor};
use burn_backend::{
    TensorMetadata,
    ops::{ConvOptions, ConvTransposeOptions, ModuleOps},
};

/// The gradient of `conv2d(x, weight, options)` with respect to `x`, given
/// the gradient of its output; `x` is read for its shape only.
pub(crate) fn conv2d_x_backward(
    x: FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: ConvOptions<2>,
) -> FlexTensor {
    let [_, _, h, w] = x.shape().dims::<4>();
    let [_, _, kh, kw] = weight.shape().dims::<4>();
    let [_, _, oh, ow] = output_grad.shape().dims::<4>();
    let (input, kernel, out) = ([h, w], [kh, kw], [oh, ow]);
    let begin = options.padding_begin();
    let mut padding_out = [0; 2];
    let mut size = [0; 2];
    for k in 0..2 {
        // The transposed convolution's own size, less `begin` at each side;
        // at least the input's, as the far-side padding (≥ 0) makes up.
        let natural = (out[k].saturating_sub(1) * options.stride[k] + options.dilation[k] * (kernel[k] - 1) + 1)
            .saturating_sub(2 * begin[k]);
        size[k] = natural.max(input[k]);
        padding_out[k] = size[k] - natural;
    }
    let grad = Flex::conv_transpose2d(
        output_grad,
        weight,
        None,
        ConvTransposeOptions::new(
            options.stride,
            begin,
            padding_out,
            options.dilation,
            options.groups,
        ),
    );
    let grad = if size[0] > h { grad.narrow(2, 0, h) } else { grad };
    if size[1] > w { grad.narrow(3, 0, w) } else { grad }
}
