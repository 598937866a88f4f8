//! histoshard (vendor/README.md, burn-flex change 8): the products of a 1×1
//! convolution, `out[b] = A · x[b]` for every batch item `b`, several items
//! to one GEMM when their planes are small.
//!
//! A 1×1, stride-1, unpadded convolution is a product per batch item: the
//! forward multiplies the weight `[c_out, c_in]` by the item's `[c_in, h·w]`,
//! the input gradient the weight's transpose by the output gradient's
//! `[c_out, h·w]`. burn-flex ran one GEMM per item, and the input gradient as a
//! general transposed convolution: a GEMM into a column buffer, then a col2im
//! pass adding it into the zeroed output. In EfficientNet-Lite0's last blocks
//! on 112-px patches a plane is 4×4: the GEMMs have 16 columns, and the `gemm`
//! crate packs the whole weight for each item and fills its 6-column tiles
//! unevenly (6 + 6 + 4). Measured on the Intel Xeon of docs/BENCHMARKS.md, one
//! thread, the 16 items of a batch: `[1152, 192] · [192, 16]` 1.30–1.41 ms one
//! item at a time, 0.82–0.84 ms four items at a time (64 columns), the same
//! for the other 4×4 shapes of the model. At 7×7 (49 columns), two to four
//! items at a time gained nothing (eight or more 5–10%, past the 64 columns
//! below); larger planes lost.
//!
//! So the items of planes of 2 to [`MERGE_BELOW`] values are multiplied up to
//! [`MERGED_COLUMNS`] columns at a time: their planes are copied side by side
//! into `[k, items·h·w]`, one GEMM writes `[m, items·h·w]`, and each item's
//! columns are copied out. Other planes keep one GEMM per item, written
//! straight into the output. Every value is the same sum of the same products
//! in the same order either way: the `gemm` crate (0.19) splits `k` into
//! blocks chosen from `k` and the caches alone, except when `m` and `n` are
//! both at most 64, where the blocks are 512 deep; with at most 64 columns a
//! merged GEMM stays on the side of that line its items were on. A one-column
//! product (a 1×1 plane) is a GEMV in `gemm`, which adds in another order, so
//! those items are not merged. `tests/flex_kernels.rs` checks the two bit for
//! bit, and the recorded training digests did not change. The input gradient
//! no longer goes through the column buffer: the GEMM writes the output
//! directly (`0 + v` was `v`, but for a zero's sign).

use alloc::vec::Vec;

use burn_backend::{DType, Element, TensorMetadata};
use burn_std::{Bytes, ElementAdd, Shape};

use super::{conv_common::add_bias_to_planes, conv_transpose::GEMM_PARALLEL_WORK};
use crate::{FlexTensor, Layout};

/// Planes of fewer values than this are multiplied several items at a time.
const MERGE_BELOW: usize = 32;

/// Columns of one merged GEMM (items × plane), at most: 4 items of a 4×4 plane.
const MERGED_COLUMNS: usize = 64;

/// The matrix `A` of `out[b] = A · x[b]`: `rows × cols` elements of `data`,
/// element `(i, j)` at `i · row_stride + j · col_stride`.
pub(crate) struct Matrix<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// `A · x[b] + bias` for each of the `batch` items of `x` (`[batch, A.cols,
/// plane]`, contiguous), as `[batch, A.rows, plane]`, in parallel over the
/// items; `bias` (`A.rows` values, one per row) is added by the task that
/// computed the rows (change 11).
pub(crate) fn batched_product<T>(
    a: &Matrix<'_, T>,
    bias: Option<&[T]>,
    x: &[T],
    batch: usize,
    plane: usize,
) -> Vec<T>
where
    T: Element + ElementAdd + bytemuck::Pod + Send + Sync,
{
    assert!(bias.is_none_or(|b| b.len() == a.rows));
    let (m, k) = (a.rows, a.cols);
    // What the GEMMs below read, in bounds.
    assert!(x.len() >= batch * k * plane);
    assert!(m == 0 || k == 0 || a.data.len() > (m - 1) * a.row_stride + (k - 1) * a.col_stride);
    let zero = T::from_elem(0.0);
    let item_len = (m * plane).max(1);
    let items_per_task = if (2..MERGE_BELOW).contains(&plane) && m > 1 {
        (MERGED_COLUMNS / plane).min(batch).max(1)
    } else {
        1
    };
    super::par_fill::par_filled(
        zero,
        batch * m * plane,
        item_len * items_per_task,
        1,
        |task, out| {
            let first = task * items_per_task;
            let items = out.len() / item_len;
            let x = &x[first * k * plane..][..items * k * plane];
            if items_per_task == 1 {
                product(a, x, plane, out);
            } else {
                merged_product(a, x, items, plane, out);
            }
            if let Some(bias) = bias {
                add_bias_to_planes(out, bias, 0, plane);
            }
        },
    )
}

/// `out = A · x`, `x` `[A.cols, columns]` and `out` `[A.rows, columns]`.
fn product<T: Element>(a: &Matrix<'_, T>, x: &[T], columns: usize, out: &mut [T]) {
    assert_eq!(out.len(), a.rows * columns);
    // SAFETY: `out` is `[rows, columns]`, checked above.
    unsafe { product_into(a, x, columns, out.as_mut_ptr()) }
}

/// [`product`] into `out`, which is only written (`gemm`'s `read_dst` is
/// false): it may be uninitialised.
///
/// # Safety
/// `out` must be valid for writes of `A.rows · columns` values.
unsafe fn product_into<T: Element>(a: &Matrix<'_, T>, x: &[T], columns: usize, out: *mut T) {
    let (m, k) = (a.rows, a.cols);
    assert!(x.len() >= k * columns);
    // Large products are split over rayon's threads by `gemm` itself, from
    // burn-flex's threshold for its convolutions.
    let parallelism = if m.saturating_mul(columns).saturating_mul(k) >= GEMM_PARALLEL_WORK {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `out` holds `[m, columns]` row-major (the caller's contract),
    // `x` `[k, columns]` row-major (checked above), `a` `[m, k]` at its
    // strides (`Matrix`'s contract).
    unsafe {
        gemm::gemm(
            m,
            columns,
            k,
            out,
            1,
            columns as isize,
            false,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            x.as_ptr(),
            1,
            columns as isize,
            T::from_elem(0.0),
            T::from_elem(1.0),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// [`product`] of `items` items at once: their planes side by side.
fn merged_product<T: Element + bytemuck::Pod>(
    a: &Matrix<'_, T>,
    x: &[T],
    items: usize,
    plane: usize,
    out: &mut [T],
) {
    let (m, k) = (a.rows, a.cols);
    let columns = items * plane;
    // Row `r` of the side-by-side matrix: row `r` of each item's `[k, plane]`.
    let mut side_by_side = Vec::with_capacity(k * columns);
    for row in 0..k {
        for item in 0..items {
            side_by_side.extend_from_slice(&x[(item * k + row) * plane..][..plane]);
        }
    }
    let mut merged = Vec::with_capacity(m * columns);
    // SAFETY: `merged` has room for `[m, columns]`; the product writes all
    // of it, so it is initialised after.
    unsafe {
        product_into(a, &side_by_side, columns, merged.as_mut_ptr());
        merged.set_len(m * columns);
    }
    for (item, out) in out.chunks_exact_mut(m * plane).enumerate() {
        for (values, row) in out
            .chunks_exact_mut(plane)
            .zip(merged.chunks_exact(columns))
        {
            values.copy_from_slice(&row[item * plane..][..plane]);
        }
    }
}

/// The input gradient of a 1×1, stride-1, unpadded, ungrouped 2D convolution
/// (`weight` `[c_out, c_in, 1, 1]`), given the output's gradient: `Wᵀ ·
/// grad[b]` for each item. `None` for any other dtype than `f32` and `f64`.
pub(crate) fn input_grad(weight: &FlexTensor, output_grad: &FlexTensor) -> Option<FlexTensor> {
    match output_grad.dtype() {
        DType::F32 => Some(input_grad_typed::<f32>(weight, output_grad)),
        DType::F64 => Some(input_grad_typed::<f64>(weight, output_grad)),
        _ => None,
    }
}

fn input_grad_typed<T: Element + ElementAdd + bytemuck::Pod + Send + Sync>(
    weight: &FlexTensor,
    output_grad: &FlexTensor,
) -> FlexTensor {
    let weight = weight.to_contiguous();
    let grad = output_grad.to_contiguous();
    let [c_out, c_in] = [weight.shape()[0], weight.shape()[1]];
    let shape = grad.shape();
    let (batch, plane) = (shape[0], shape[2] * shape[3]);
    // Wᵀ: element (i, o) of `[c_in, c_out]` is W[o, i].
    let transposed = Matrix {
        data: weight.storage::<T>(),
        rows: c_in,
        cols: c_out,
        row_stride: 1,
        col_stride: c_in,
    };
    let values = batched_product(&transposed, None, grad.storage::<T>(), batch, plane);
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::new([batch, c_in, shape[2], shape[3]])),
        T::dtype(),
    )
}
