//! Depthwise convolution one `(n, c)` plane at a time, in its `s_y·s_x`
//! polyphase planes (`x_padded[a + s_y·y, b + s_x·x]` for each phase
//! `(a, b)`, the padding as zeros), in which every tap is a stride-1 shift,
//! with the output-gradient plane zero-padded on the right to the planes'
//! width. Each tap is then one contiguous pass over the plane (the padded
//! columns add zero), in 16 lanes that the compiler vectorises: for the
//! output, the input's planes times the tap's weight added into a zeroed
//! plane at the planes' width, whose first `ow` columns are copied out; for
//! the weight, a dot product of the input's planes and the gradient; for the
//! input, the gradient times the tap's weight added into zeroed planes, then
//! copied out. The copies stay in cache; the tensors are read once.

use alloc::{vec, vec::Vec};

use super::Depthwise;
use crate::Real;

/// [`Depthwise::forward`] of the planes `first ..`.
pub(super) fn forward<T: Real>(
    shape: &Depthwise,
    x: &[T],
    weight: &[T],
    first: usize,
    out: &mut [T],
) {
    let geometry = Geometry::new(shape);
    let mut buffers = Buffers::new(&geometry);
    let taps = shape.taps();
    for (k, y) in out
        .chunks_exact_mut(shape.out[0] * shape.out[1])
        .enumerate()
    {
        let index = first + k;
        let c = index % shape.channels;
        buffers.load_input(&geometry, x, index);
        buffers.grad.fill(T::default());
        buffers.gather(&geometry, &weight[c * taps..][..taps]);
        buffers.unload_output(&geometry, y);
    }
}

/// [`Depthwise::weight_grad`] of the channels `first ..`.
pub(super) fn weight_grad<T: Real>(
    shape: &Depthwise,
    x: &[T],
    grad: &[T],
    first: usize,
    out: &mut [T],
) {
    out.fill(T::default());
    let geometry = Geometry::new(shape);
    let mut buffers = Buffers::new(&geometry);
    for (k, result) in out.chunks_exact_mut(shape.taps()).enumerate() {
        for n in 0..shape.batch {
            let index = n * shape.channels + first + k;
            buffers.load_input(&geometry, x, index);
            buffers.load_grad(&geometry, grad, index);
            buffers.accumulate(&geometry, result);
        }
    }
}

/// [`Depthwise::input_grad`] of the planes `first ..`.
pub(super) fn input_grad<T: Real>(
    shape: &Depthwise,
    weight: &[T],
    grad: &[T],
    first: usize,
    out: &mut [T],
) {
    let geometry = Geometry::new(shape);
    let mut buffers = Buffers::new(&geometry);
    let taps = shape.taps();
    for (k, dx) in out
        .chunks_exact_mut(shape.input[0] * shape.input[1])
        .enumerate()
    {
        let index = first + k;
        let c = index % shape.channels;
        buffers.load_grad(&geometry, grad, index);
        buffers.phases.fill(T::default());
        buffers.spread(&geometry, &weight[c * taps..][..taps]);
        buffers.unload(&geometry, dx);
    }
}

/// Where one input plane goes in the polyphase planes.
struct Geometry<'a> {
    shape: &'a Depthwise,
    /// The polyphase planes' size: `plane[a][b][y][x] = x_padded[y·s_y + a][x·s_x + b]`.
    plane: [usize; 2],
}

impl<'a> Geometry<'a> {
    fn new(shape: &'a Depthwise) -> Self {
        // Every padded position of the input, and every one a tap reaches.
        let plane = [0, 1].map(|k| {
            let input = shape.input[k] + shape.padding[k];
            let reached = (shape.out[k] - 1) * shape.stride[k]
                + (shape.kernel[k] - 1) * shape.dilation[k]
                + 1;
            input.max(reached).div_ceil(shape.stride[k])
        });
        Self { shape, plane }
    }
}

impl Geometry<'_> {
    /// Where input row `y` goes: for each column phase `b`, the start of
    /// the plane row it lands in, the first input column of that phase and
    /// its column in the plane.
    fn row_phases(&self, y: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let [py, px] = self.shape.padding;
        let [sy, sx] = self.shape.stride;
        let [hq, wq] = self.plane;
        let (row, a) = ((y + py) / sy, (y + py) % sy);
        let w = self.shape.input[1];
        (0..sx).filter_map(move |b| {
            // The columns x with (x + px) % sx == b, from col (x + px) / sx on.
            let first = (b + sx - px % sx) % sx;
            (first < w).then(|| (((a * sx + b) * hq + row) * wq, first, (first + px) / sx))
        })
    }

    /// Each tap's pass runs over the output rows at the planes' width, the
    /// last row only to its end.
    fn tap_len(&self) -> usize {
        (self.shape.out[0] - 1) * self.plane[1] + self.shape.out[1]
    }

    /// Where each tap `(i, j)`, in order, starts in the polyphase planes.
    fn tap_starts(&self) -> impl Iterator<Item = usize> + '_ {
        let [sy, sx] = self.shape.stride;
        let [dy, dx] = self.shape.dilation;
        let [kh, kw] = self.shape.kernel;
        let [hq, wq] = self.plane;
        (0..kh).flat_map(move |i| {
            let (row, a) = ((i * dy) / sy, (i * dy) % sy);
            (0..kw).map(move |j| {
                let (col, b) = ((j * dx) / sx, (j * dx) % sx);
                ((a * sx + b) * hq + row) * wq + col
            })
        })
    }
}

/// One thread's copies of one `(n, c)` input plane, split into its
/// polyphase planes with the padding as zeros, and of its output-gradient
/// plane, zero-padded on the right to the planes' width: the padding
/// positions are the same for every plane, so they are zeroed once.
struct Buffers<T> {
    phases: Vec<T>,
    grad: Vec<T>,
}

impl<T: Real> Buffers<T> {
    fn new(geometry: &Geometry) -> Self {
        let [sy, sx] = geometry.shape.stride;
        let [hq, wq] = geometry.plane;
        Self {
            phases: vec![T::default(); sy * sx * hq * wq],
            grad: vec![T::default(); geometry.shape.out[0] * wq],
        }
    }

    /// Plane `index` of the input, into the polyphase planes.
    fn load_input(&mut self, geometry: &Geometry, x: &[T], index: usize) {
        let [h, w] = geometry.shape.input;
        let x = &x[index * h * w..][..h * w];
        for (y, row) in x.chunks_exact(w).enumerate() {
            for (phase, first, col) in geometry.row_phases(y) {
                for (d, v) in self.phases[phase + col..]
                    .iter_mut()
                    .zip(row[first..].iter().step_by(geometry.shape.stride[1]))
                {
                    *d = *v;
                }
            }
        }
    }

    /// Plane `index` of the output gradient, at the planes' width.
    fn load_grad(&mut self, geometry: &Geometry, grad: &[T], index: usize) {
        let [oh, ow] = geometry.shape.out;
        let wq = geometry.plane[1];
        let g = &grad[index * oh * ow..][..oh * ow];
        for (dest, row) in self.grad.chunks_exact_mut(wq).zip(g.chunks_exact(ow)) {
            dest[..ow].copy_from_slice(row);
        }
    }

    /// Copies the input's positions of the polyphase planes out to `dx`, the
    /// reverse of [Buffers::load_input].
    fn unload(&self, geometry: &Geometry, dx: &mut [T]) {
        let w = geometry.shape.input[1];
        for (y, row) in dx.chunks_exact_mut(w).enumerate() {
            for (phase, first, col) in geometry.row_phases(y) {
                for (d, v) in row[first..]
                    .iter_mut()
                    .step_by(geometry.shape.stride[1])
                    .zip(&self.phases[phase + col..])
                {
                    *d = *v;
                }
            }
        }
    }

    /// Adds the polyphase planes at each tap's shift times its weight into the
    /// output plane, held in `grad` at the planes' width.
    fn gather(&mut self, geometry: &Geometry, weights: &[T]) {
        let len = geometry.tap_len();
        let y = &mut self.grad[..len];
        for (start, weight) in geometry.tap_starts().zip(weights) {
            for (o, v) in y.iter_mut().zip(&self.phases[start..][..len]) {
                *o += *v * *weight;
            }
        }
    }

    /// The first `ow` columns of each row of the output plane [Buffers::gather]
    /// left in `grad`.
    fn unload_output(&self, geometry: &Geometry, y: &mut [T]) {
        let ow = geometry.shape.out[1];
        for (dest, row) in y
            .chunks_exact_mut(ow)
            .zip(self.grad.chunks(geometry.plane[1]))
        {
            dest.copy_from_slice(&row[..ow]);
        }
    }

    /// Adds the gradient plane times each tap's weight at that tap's shift.
    fn spread(&mut self, geometry: &Geometry, weights: &[T]) {
        let len = geometry.tap_len();
        let g = &self.grad[..len];
        for (start, weight) in geometry.tap_starts().zip(weights) {
            for (p, v) in self.phases[start..][..len].iter_mut().zip(g) {
                *p += *v * *weight;
            }
        }
    }

    /// Adds this plane's `kh·kw` gradient values to `result`.
    fn accumulate(&self, geometry: &Geometry, result: &mut [T]) {
        let len = geometry.tap_len();
        let g = &self.grad[..len];
        for (start, sum) in geometry.tap_starts().zip(result.iter_mut()) {
            *sum += dot(g, &self.phases[start..][..len]);
        }
    }
}

/// `Σ a[k]·b[k]` in 16 lanes, which the compiler vectorises.
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    const LANES: usize = 16;
    let (a_chunks, a_tail) = a.as_chunks::<LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<LANES>();
    let mut acc = [T::default(); LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for ((sum, x), y) in acc.iter_mut().zip(x).zip(y) {
            *sum += *x * *y;
        }
    }
    let mut total = T::default();
    for (x, y) in a_tail.iter().zip(b_tail) {
        total += *x * *y;
    }
    acc.iter().fold(total, |sum, v| sum + *v)
}
