//! histoshard (vendor/README.md, burn-flex change 1): the weight gradient of
//! a 2D convolution, computed directly.
//!
//! burn-flex 0.22.1 implements no `conv2d_weight_backward`, so burn's generic
//! default ran: a convolution with the batch as channels and the whole output
//! as its kernel, and for a grouped convolution one such convolution per
//! group (up to 1,152 per depthwise layer in EfficientNet-Lite0). It was a
//! third of flex's training step (docs/BENCHMARKS.md).
//!
//! - Depthwise (`groups == C_in == C_out`, weight `[C, 1, kh, kw]`):
//!   `histoshard_kernels::depthwise`, the kernel vendor/burn-tch runs too,
//!   the channels split over rayon's threads.
//! - Every other convolution: per batch item and group, im2col of the input
//!   (`[C_in/g·kh·kw, OH·OW]`; a 1×1, stride-1, unpadded convolution reads
//!   its input as it is) and one GEMM, `dW_g += G_g · colᵀ`. The batch is
//!   split into up to 8 fixed chunks, each summed on one of rayon's threads,
//!   and the sums are added in order, so the result does not depend on the
//!   thread count.
//!
//! Asymmetric padding is read in place, not applied to a copy of the input.
//! `f32` and `f64` run natively; `f16` and `bf16` through `f32`.

use crate::ops::depthwise_forward::split_over_threads;
use crate::ops::module::{cast_from_f32, cast_to_f32};
use crate::{FlexTensor, Layout};
use alloc::{vec, vec::Vec};
use burn_backend::{DType, Element, TensorMetadata, ops::ConvOptions};
use burn_std::{Bytes, Shape, bf16, f16};
use histoshard_kernels::{Real, depthwise::Depthwise};
use rayon::prelude::*;

/// The gradient of `conv2d(x, weight, options)` with respect to `weight`,
/// given the gradient of its output.
pub(crate) fn conv2d_weight_backward(
    x: FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: ConvOptions<2>,
) -> FlexTensor {
    let weight_shape = weight.shape();
    match x.dtype() {
        DType::F32 => weight_grad::<f32>(x, output_grad, weight_shape, &options),
        DType::F64 => weight_grad::<f64>(x, output_grad, weight_shape, &options),
        DType::F16 => cast_from_f32(
            weight_grad::<f32>(
                cast_to_f32(x, f16::to_f32),
                cast_to_f32(output_grad, f16::to_f32),
                weight_shape,
                &options,
            ),
            f16::from_f32,
        ),
        DType::BF16 => cast_from_f32(
            weight_grad::<f32>(
                cast_to_f32(x, bf16::to_f32),
                cast_to_f32(output_grad, bf16::to_f32),
                weight_shape,
                &options,
            ),
            bf16::from_f32,
        ),
        dtype => panic!("conv2d_weight_backward: unsupported dtype {dtype:?}"),
    }
}

fn weight_grad<T: Real + Element + bytemuck::Pod>(
    x: FlexTensor,
    output_grad: FlexTensor,
    weight_shape: Shape,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let x = x.into_contiguous();
    let grad = output_grad.into_contiguous();
    let [batch, c_in, h, w] = x.layout().shape().dims::<4>();
    let [_, c_out, oh, ow] = grad.layout().shape().dims::<4>();
    let [_, c_in_group, kh, kw] = weight_shape.dims::<4>();
    let geometry = Geometry {
        batch,
        c_in,
        c_out,
        groups: options.groups,
        c_in_group,
        input: [h, w],
        padding: options.padding_begin(),
        kernel: [kh, kw],
        out: [oh, ow],
        stride: options.stride,
        dilation: options.dilation,
    };
    let (x, grad) = (x.storage::<T>(), grad.storage::<T>());
    let result = if geometry.is_depthwise() {
        depthwise(&geometry, x, grad)
    } else {
        im2col_gemm(&geometry, x, grad)
    };
    FlexTensor::new(
        Bytes::from_elems(result),
        Layout::contiguous(weight_shape),
        T::dtype(),
    )
}

/// The convolution. `padding` is the padding before the first row and
/// column: both kernels read zero wherever a tap falls outside the input, so
/// asymmetric padding needs no padded copy of the input (the far side's
/// extent is in `out`).
struct Geometry {
    batch: usize,
    c_in: usize,
    c_out: usize,
    groups: usize,
    c_in_group: usize,
    input: [usize; 2],
    padding: [usize; 2],
    kernel: [usize; 2],
    out: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
}

impl Geometry {
    fn is_depthwise(&self) -> bool {
        self.c_in_group == 1 && self.groups == self.c_in && self.c_out == self.c_in
    }

    /// A 1×1, stride-1, unpadded convolution: its im2col is its input.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1]
            && self.stride == [1, 1]
            && self.padding == [0, 0]
            && self.out == self.input
    }

    fn c_out_group(&self) -> usize {
        self.c_out / self.groups
    }

    /// Rows of the im2col matrix of one group: `C_in/g·kh·kw`.
    fn col_rows(&self) -> usize {
        self.c_in_group * self.kernel[0] * self.kernel[1]
    }

    fn out_len(&self) -> usize {
        self.out[0] * self.out[1]
    }
}

// Never inlined: profiles (scripts/op_profile.py) tell the two kinds apart by name.
#[inline(never)]
fn depthwise<T: Real>(geometry: &Geometry, x: &[T], grad: &[T]) -> Vec<T> {
    let shape = Depthwise {
        batch: geometry.batch,
        channels: geometry.c_in,
        input: geometry.input,
        padding: geometry.padding,
        kernel: geometry.kernel,
        out: geometry.out,
        stride: geometry.stride,
        dilation: geometry.dilation,
    };
    split_over_threads(shape.channels, shape.taps(), |first, chunk| {
        shape.weight_grad(x, grad, first, chunk)
    })
}

/// The batch is split into at most this many chunks, each summed on its own.
const MAX_PARTIAL_SUMS: usize = 8;

#[inline(never)]
fn im2col_gemm<T: Real + Element + bytemuck::Pod>(
    geometry: &Geometry,
    x: &[T],
    grad: &[T],
) -> Vec<T> {
    let len = geometry.c_out * geometry.col_rows();
    if geometry.batch == 0 || len == 0 || geometry.out_len() == 0 {
        return vec![T::default(); len];
    }
    let col_len = if geometry.is_pointwise() {
        0
    } else {
        geometry.col_rows() * geometry.out_len()
    };
    // Fixed chunks of the batch, summed in order: the result does not depend
    // on the number of threads or on how rayon schedules them.
    let chunk = geometry.batch.div_ceil(MAX_PARTIAL_SUMS);
    let partial: Vec<Vec<T>> = (0..geometry.batch)
        .step_by(chunk)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|first| {
            let mut sum = vec![T::default(); len];
            let mut col = vec![T::default(); col_len];
            for n in first..(first + chunk).min(geometry.batch) {
                for group in 0..geometry.groups {
                    add_item_group(geometry, x, grad, n, group, &mut col, &mut sum);
                }
            }
            sum
        })
        .collect();
    let mut partial = partial.into_iter();
    let mut result = partial.next().unwrap_or_else(|| vec![T::default(); len]);
    let rest: Vec<Vec<T>> = partial.collect();
    // Each value adds the partial sums in chunk order, so the split over
    // threads does not change the result (change 6: this ran on the calling
    // thread alone, 8% of its samples in the default job's fine-tuning).
    let add_rest = |i: usize, out: &mut [T]| {
        for sum in &rest {
            out.iter_mut()
                .zip(&sum[i * SUM_CHUNK..])
                .for_each(|(a, b)| *a += *b);
        }
    };
    if len > SUM_CHUNK && !rest.is_empty() {
        result
            .par_chunks_mut(SUM_CHUNK)
            .enumerate()
            .for_each(|(i, out)| add_rest(i, out));
    } else {
        add_rest(0, &mut result);
    }
    result
}

/// Values of the weight gradient a task adds the partial sums of.
const SUM_CHUNK: usize = 16 * 1024;

/// `dW_group += G[n, group] · col(x[n, group])ᵀ`.
fn add_item_group<T: Real + Element + bytemuck::Pod>(
    geometry: &Geometry,
    x: &[T],
    grad: &[T],
    n: usize,
    group: usize,
    col: &mut [T],
    sum: &mut [T],
) {
    let [h, w] = geometry.input;
    let (rows, cols) = (geometry.col_rows(), geometry.out_len());
    let c_out_group = geometry.c_out_group();
    let x_group = &x[(n * geometry.c_in + group * geometry.c_in_group) * h * w..]
        [..geometry.c_in_group * h * w];
    let g = &grad[(n * geometry.c_out + group * c_out_group) * cols..][..c_out_group * cols];
    let rhs: &[T] = if geometry.is_pointwise() {
        x_group
    } else {
        im2col(geometry, x_group, col);
        col
    };
    let dst = &mut sum[group * c_out_group * rows..][..c_out_group * rows];
    // SAFETY: `dst` is `[c_out_group, rows]`, `g` is `[c_out_group, cols]`
    // and `rhs` is `[rows, cols]`, all row-major and in bounds; the
    // product reads `rhs` transposed (column stride `cols`, row stride 1).
    unsafe {
        gemm::gemm(
            c_out_group,
            rows,
            cols,
            dst.as_mut_ptr(),
            1,
            rows as isize,
            true,
            g.as_ptr(),
            1,
            cols as isize,
            rhs.as_ptr(),
            cols as isize,
            1,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `col[(c, i, j), (oy, ox)] = x[c, oy·s_y + i·d_y − p_y, ox·s_x + j·d_x − p_x]`,
/// zero outside the input.
fn im2col<T: Real>(geometry: &Geometry, x: &[T], col: &mut [T]) {
    let [h, w] = geometry.input;
    let [kh, kw] = geometry.kernel;
    let [oh, ow] = geometry.out;
    let [sy, sx] = geometry.stride;
    let [dy, dx] = geometry.dilation;
    let [py, px] = geometry.padding;
    let mut rows = col.chunks_exact_mut(oh * ow);
    for plane in x.chunks_exact(h * w) {
        for i in 0..kh {
            for j in 0..kw {
                let Some(row) = rows.next() else { return };
                // The output columns whose input column is inside the plane.
                let offset = j * dx;
                let first = px.saturating_sub(offset).div_ceil(sx).min(ow);
                let last = (w + px)
                    .checked_sub(offset)
                    .map_or(0, |limit| limit.div_ceil(sx))
                    .clamp(first, ow);
                for (oy, out) in row.chunks_exact_mut(ow).enumerate() {
                    let iy = oy * sy + i * dy;
                    if iy < py || iy - py >= h {
                        out.fill(T::default());
                        continue;
                    }
                    let input = &plane[(iy - py) * w..][..w];
                    out[..first].fill(T::default());
                    out[last..].fill(T::default());
                    for (ox, value) in out[first..last].iter_mut().enumerate() {
                        *value = input[(first + ox) * sx + offset - px];
                    }
                }
            }
        }
    }
}
