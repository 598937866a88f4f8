//! A depthwise convolution (weight `[C, 1, kh, kw]`, `groups == C`) and its
//! two gradients, computed directly (`x` padded, stride `s`, dilation `d`):
//!
//! - output: `y[n, c, oy, ox] = Σ_{i, j} W[c, 0, i, j] · x[n, c, oy·s + i·d, ox·s + j·d]`;
//! - weight: `dW[c, 0, i, j] = Σ_n Σ_{oy, ox} g[n, c, oy, ox] · x[n, c, oy·s + i·d, ox·s + j·d]`;
//! - input (a depthwise transposed convolution):
//!   `dx[n, c, oy·s + i·d, ox·s + j·d] += g[n, c, oy, ox] · W[c, 0, i, j]`.
//!
//! Both work on one `(n, c)` plane at a time in its `s_y·s_x` polyphase
//! planes (`x_padded[a + s_y·y, b + s_x·x]` for each phase `(a, b)`, the
//! padding as zeros), in which every tap is a stride-1 shift, with the
//! output-gradient plane zero-padded on the right to the planes' width. Each
//! tap is then one contiguous pass over the plane (the padded columns add
//! zero), in 16 lanes that the compiler vectorises: for the output, the
//! input's planes times the tap's weight added into a zeroed plane at the
//! planes' width, whose first `ow` columns are copied out; for the weight, a
//! dot product of the input's planes and the gradient; for the input, the
//! gradient times the tap's weight added into zeroed planes, then copied
//! out. The copies stay in cache; the tensors are read once. Each tap's
//! pass covers a whole plane, so small planes (EfficientNet's last blocks
//! run at 7×7 and 4×4 on 112-px patches) still make long passes.
//!
//! Why not the backends' own kernels: oneDNN 3.7 (LibTorch's CPU
//! convolutions) has a depthwise backward-weights kernel for 3×3 only and
//! falls back to im2col + GEMM for EfficientNet's 5×5 ones, seconds a call;
//! burn's generic default, which burn-flex runs, does one full convolution
//! per channel (docs/BENCHMARKS.md).

use alloc::{vec, vec::Vec};

use crate::Real;

/// The geometry of one depthwise convolution: `x` is `[batch, channels,
/// input]`, the output and its gradient `[batch, channels, out]`, and
/// `padding` the padding before the first row and column (the padding after
/// the last is whatever `out` implies).
#[derive(Clone, Debug)]
pub struct Depthwise {
    pub batch: usize,
    pub channels: usize,
    pub input: [usize; 2],
    pub padding: [usize; 2],
    pub kernel: [usize; 2],
    pub out: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
}

impl Depthwise {
    /// Values per channel of the gradient: `kh·kw`.
    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// Whether there is nothing to compute (an empty dimension): the gradient
    /// is then all zeros.
    pub fn is_empty(&self) -> bool {
        [self.batch, self.channels, self.input[0], self.input[1]].contains(&0)
            || self.out.contains(&0)
    }

    /// Writes the output planes `first .. first + out.len() / (oh·ow)` (plane
    /// `p` is batch item `p / C`, channel `p % C`) into `out`, overwriting
    /// it; `weight` is `[C, kh·kw]`, and there is no bias. Callers split the
    /// planes over their threads, one call per range.
    ///
    /// # Panics
    /// If `x`, `weight` or `out` is not of the size the geometry says.
    pub fn forward<T: Real>(&self, x: &[T], weight: &[T], first: usize, out: &mut [T]) {
        let plane = self.out[0] * self.out[1];
        assert_eq!(
            x.len(),
            self.batch * self.channels * self.input[0] * self.input[1]
        );
        assert_eq!(weight.len(), self.channels * self.taps());
        assert!(out.len() % plane.max(1) == 0);
        assert!(first + out.len() / plane.max(1) <= self.batch * self.channels);
        out.fill(T::default());
        if self.is_empty() || self.taps() == 0 {
            return;
        }
        let geometry = Geometry::new(self);
        let mut buffers = Buffers::new(&geometry);
        for (k, y) in out.chunks_exact_mut(plane).enumerate() {
            let index = first + k;
            let c = index % self.channels;
            buffers.load_input(&geometry, x, index);
            buffers.grad.fill(T::default());
            buffers.gather(&geometry, &weight[c * self.taps()..][..self.taps()]);
            buffers.unload_output(&geometry, y);
        }
    }

    /// Writes the gradient of channels `first .. first + out.len() / taps()`
    /// into `out` (`[channel][kh][kw]`), overwriting it. Callers split the
    /// channels over their threads, one call per range.
    ///
    /// # Panics
    /// If `x`, `grad` or `out` is not of the size the geometry says.
    pub fn weight_grad<T: Real>(&self, x: &[T], grad: &[T], first: usize, out: &mut [T]) {
        let taps = self.taps();
        assert_eq!(
            x.len(),
            self.batch * self.channels * self.input[0] * self.input[1]
        );
        assert_eq!(
            grad.len(),
            self.batch * self.channels * self.out[0] * self.out[1]
        );
        assert!(out.len() % taps.max(1) == 0 && first + out.len() / taps.max(1) <= self.channels);
        out.fill(T::default());
        if self.is_empty() || taps == 0 {
            return;
        }
        let geometry = Geometry::new(self);
        let mut buffers = Buffers::new(&geometry);
        for (k, result) in out.chunks_exact_mut(taps).enumerate() {
            for n in 0..self.batch {
                buffers.load(&geometry, x, grad, n, first + k);
                buffers.accumulate(&geometry, result);
            }
        }
    }

    /// Writes the input gradient of planes `first .. first + out.len() / (H·W)`
    /// (plane `p` is batch item `p / C`, channel `p % C`) into `out`,
    /// overwriting it; `weight` is `[C, kh·kw]`. Callers split the planes over
    /// their threads, one call per range.
    ///
    /// # Panics
    /// If `weight`, `grad` or `out` is not of the size the geometry says.
    pub fn input_grad<T: Real>(&self, weight: &[T], grad: &[T], first: usize, out: &mut [T]) {
        let plane = self.input[0] * self.input[1];
        assert_eq!(weight.len(), self.channels * self.taps());
        assert_eq!(
            grad.len(),
            self.batch * self.channels * self.out[0] * self.out[1]
        );
        assert!(out.len() % plane.max(1) == 0);
        assert!(first + out.len() / plane.max(1) <= self.batch * self.channels);
        out.fill(T::default());
        if self.is_empty() || self.taps() == 0 {
            return;
        }
        let geometry = Geometry::new(self);
        let mut buffers = Buffers::new(&geometry);
        for (k, dx) in out.chunks_exact_mut(plane).enumerate() {
            let index = first + k;
            let c = index % self.channels;
            buffers.load_grad(&geometry, grad, index);
            buffers.phases.fill(T::default());
            buffers.spread(&geometry, &weight[c * self.taps()..][..self.taps()]);
            buffers.unload(&geometry, dx);
        }
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

    fn load(&mut self, geometry: &Geometry, x: &[T], grad: &[T], n: usize, c: usize) {
        let index = n * geometry.shape.channels + c;
        self.load_input(geometry, x, index);
        self.load_grad(geometry, grad, index);
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
    /// reverse of [Buffers::load].
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
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
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
