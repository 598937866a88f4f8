//! Depthwise convolution a run of channels of one image at a time,
//! transposed to `[pixel][channel]`. Every (output pixel, tap) pair whose tap
//! lands inside the input is then a product of two rows over the run's
//! channels: for the output, the input pixel's row times the tap's weights,
//! summed into the output pixel's row; for the input, the output-gradient
//! pixel's row times the weights, summed into the input pixel's; for the
//! weight, the two pixels' rows, summed into the tap's. Each sum runs in
//! registers over a block of channels ([`Sums`]). Padding is never read:
//! pairs that fall outside are not listed.
//!
//! Each output value sums its taps in the order [`super::planes`] does, and
//! each input-gradient value its contributions, so both are the same bit
//! for bit.

use alloc::{vec, vec::Vec};

use multiversion::multiversion;

use super::Depthwise;
use crate::Real;

/// [`Depthwise::forward`] of the planes `first ..`.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(super) fn forward<T: Real>(
    shape: &Depthwise,
    x: &[T],
    weight: &[T],
    first: usize,
    out: &mut [T],
) {
    let sums = Sums::new(pairs(shape), |p| (p.output, p.input, p.tap));
    let (hw, ohw) = (shape.input[0] * shape.input[1], shape.out[0] * shape.out[1]);
    let mut buffers = Buffers::new(shape, hw, ohw);
    for run in runs(shape, first, out.len() / ohw) {
        let cw = run.channels;
        transpose_in(&x[run.plane * hw..][..cw * hw], hw, &mut buffers.input);
        buffers.load_weights(shape, weight, run);
        let y = &mut buffers.output[..ohw * cw];
        y.fill(T::default());
        sums.set(&buffers.input, &buffers.weights, cw, y);
        let offset = (run.plane - first) * ohw;
        transpose_out(y, ohw, cw, &mut out[offset..][..cw * ohw]);
    }
}

/// [`Depthwise::input_grad`] of the planes `first ..`.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(super) fn input_grad<T: Real>(
    shape: &Depthwise,
    weight: &[T],
    grad: &[T],
    first: usize,
    out: &mut [T],
) {
    let sums = Sums::new(pairs(shape), |p| (p.input, p.output, p.tap));
    let (hw, ohw) = (shape.input[0] * shape.input[1], shape.out[0] * shape.out[1]);
    let mut buffers = Buffers::new(shape, hw, ohw);
    for run in runs(shape, first, out.len() / hw) {
        let cw = run.channels;
        transpose_in(
            &grad[run.plane * ohw..][..cw * ohw],
            ohw,
            &mut buffers.output,
        );
        buffers.load_weights(shape, weight, run);
        let dx = &mut buffers.input[..hw * cw];
        dx.fill(T::default());
        sums.set(&buffers.output, &buffers.weights, cw, dx);
        let offset = (run.plane - first) * hw;
        transpose_out(dx, hw, cw, &mut out[offset..][..cw * hw]);
    }
}

/// [`Depthwise::weight_grad`] of the channels `first ..`.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(super) fn weight_grad<T: Real>(
    shape: &Depthwise,
    x: &[T],
    grad: &[T],
    first: usize,
    out: &mut [T],
) {
    let sums = Sums::new(pairs(shape), |p| (p.tap, p.output, p.input));
    let taps = shape.taps();
    let (hw, ohw) = (shape.input[0] * shape.input[1], shape.out[0] * shape.out[1]);
    let cw = out.len() / taps;
    let mut buffers = Buffers::new(shape, hw, ohw);
    let mut total = vec![T::default(); taps * cw];
    for n in 0..shape.batch {
        let plane = n * shape.channels + first;
        transpose_in(&x[plane * hw..][..cw * hw], hw, &mut buffers.input);
        transpose_in(&grad[plane * ohw..][..cw * ohw], ohw, &mut buffers.output);
        sums.add(&buffers.output, &buffers.input, cw, &mut total);
    }
    transpose_out(&total, taps, cw, out);
}

/// Channels summed together in registers: a multiple of every vector width.
const LANES: usize = 32;

/// The pairs grouped by the row of `[row][channel]` they add into (an
/// output pixel, an input pixel or a tap), in the order they came within
/// each group; each pair is a term, the product of a row of one buffer and
/// a row of another. Each group's sum runs in registers, [`LANES`] channels
/// at a time, and is written once.
struct Sums {
    /// The row each group adds into, and its terms.
    groups: Vec<(usize, core::ops::Range<usize>)>,
    /// Rows of the two factors.
    terms: Vec<(usize, usize)>,
}

impl Sums {
    /// `key` maps a pair to (row it adds into, row of the first factor, row
    /// of the second).
    #[inline(always)]
    fn new(pairs: Vec<Pair>, key: impl Fn(&Pair) -> (usize, usize, usize)) -> Self {
        let keyed: Vec<(usize, usize, usize)> = pairs.iter().map(key).collect();
        // A counting sort by the row added into: stable, so within a group
        // the pairs keep their own order. Every task of every call builds
        // this; a comparison sort was 1.5% of an inference pass.
        let rows = keyed.iter().map(|k| k.0 + 1).max().unwrap_or(0);
        let mut starts = vec![0usize; rows + 1];
        for k in &keyed {
            starts[k.0 + 1] += 1;
        }
        for r in 0..rows {
            starts[r + 1] += starts[r];
        }
        let groups = (0..rows)
            .filter(|&r| starts[r] < starts[r + 1])
            .map(|r| (r, starts[r]..starts[r + 1]))
            .collect();
        let mut terms = vec![(0, 0); keyed.len()];
        for (row, a, b) in keyed {
            terms[starts[row]] = (a, b);
            starts[row] += 1;
        }
        Self { groups, terms }
    }

    /// `out[row] = Σ a[i]·b[j]` over each group's terms (rows with no group
    /// are left as they are).
    #[inline(always)]
    fn set<T: Real>(&self, a: &[T], b: &[T], channels: usize, out: &mut [T]) {
        self.each(a, b, channels, out, |dest, sum| *dest = sum);
    }

    /// `out[row] += Σ a[i]·b[j]` over each group's terms.
    #[inline(always)]
    fn add<T: Real>(&self, a: &[T], b: &[T], channels: usize, out: &mut [T]) {
        self.each(a, b, channels, out, |dest, sum| *dest += sum);
    }

    /// `store(out[row], Σ a[i]·b[j])` for every group: [`LANES`] channels at a
    /// time, then what is left in blocks of 16, 8 and 1.
    #[inline(always)]
    fn each<T: Real>(
        &self,
        a: &[T],
        b: &[T],
        channels: usize,
        out: &mut [T],
        store: impl Fn(&mut T, T) + Copy,
    ) {
        let mut c = 0;
        while c + LANES <= channels {
            self.block::<T, LANES>(a, b, channels, c, out, store);
            c += LANES;
        }
        if c + 16 <= channels {
            self.block::<T, 16>(a, b, channels, c, out, store);
            c += 16;
        }
        if c + 8 <= channels {
            self.block::<T, 8>(a, b, channels, c, out, store);
            c += 8;
        }
        while c < channels {
            self.block::<T, 1>(a, b, channels, c, out, store);
            c += 1;
        }
    }

    /// [`Sums::each`] for the channels `c .. c + L`, each sum in registers.
    #[inline(always)]
    fn block<T: Real, const L: usize>(
        &self,
        a: &[T],
        b: &[T],
        channels: usize,
        c: usize,
        out: &mut [T],
        store: impl Fn(&mut T, T),
    ) {
        for (row, range) in &self.groups {
            let mut acc = [T::default(); L];
            for &(i, j) in &self.terms[range.clone()] {
                let x = &a[i * channels + c..][..L];
                let w = &b[j * channels + c..][..L];
                for ((sum, x), w) in acc.iter_mut().zip(x).zip(w) {
                    *sum += *x * *w;
                }
            }
            for (dest, sum) in out[row * channels + c..][..L].iter_mut().zip(acc) {
                store(dest, sum);
            }
        }
    }
}

/// An output pixel, a tap and the input pixel the tap reads there (indices
/// into a plane and into `[kh][kw]`).
struct Pair {
    output: usize,
    tap: usize,
    input: usize,
}

/// Every pair whose input pixel is inside the input, by tap and then output
/// pixel: grouped by any of the three ([`Sums::new`]), each group then sums
/// in tap order, as `planes` does.
#[inline(always)]
fn pairs(shape: &Depthwise) -> Vec<Pair> {
    let [_, w] = shape.input;
    let [oh, ow] = shape.out;
    let [kh, kw] = shape.kernel;
    let inside = |o: usize, k: usize, axis: usize| {
        (o * shape.stride[axis] + k * shape.dilation[axis])
            .checked_sub(shape.padding[axis])
            .filter(|&i| i < shape.input[axis])
    };
    let pair = |output: usize, tap: usize| {
        let (oy, ox, i, j) = (output / ow, output % ow, tap / kw, tap % kw);
        let (iy, ix) = (inside(oy, i, 0)?, inside(ox, j, 1)?);
        Some(Pair {
            output,
            tap,
            input: iy * w + ix,
        })
    };
    let (outputs, taps) = (oh * ow, kh * kw);
    (0..taps)
        .flat_map(|t| (0..outputs).filter_map(move |o| pair(o, t)))
        .collect()
}

/// Consecutive channels of one image: planes `plane .. plane + channels`.
#[derive(Clone, Copy)]
struct Run {
    plane: usize,
    channels: usize,
}

/// The planes `first .. first + count` cut where an image ends.
#[inline(always)]
fn runs(shape: &Depthwise, first: usize, count: usize) -> impl Iterator<Item = Run> + '_ {
    let end = first + count;
    let mut plane = first;
    core::iter::from_fn(move || {
        (plane < end).then(|| {
            let channels = (shape.channels - plane % shape.channels).min(end - plane);
            let run = Run { plane, channels };
            plane += channels;
            run
        })
    })
}

/// One thread's transposed copies, each large enough for a whole image.
struct Buffers<T> {
    /// `[input pixel][channel]`.
    input: Vec<T>,
    /// `[output pixel][channel]`.
    output: Vec<T>,
    /// `[tap][channel]`.
    weights: Vec<T>,
    /// The run whose weights `weights` holds: the first channel and the count.
    weights_of: Option<(usize, usize)>,
}

impl<T: Real> Buffers<T> {
    #[inline(always)]
    fn new(shape: &Depthwise, hw: usize, ohw: usize) -> Self {
        let c = shape.channels;
        Self {
            input: vec![T::default(); hw * c],
            output: vec![T::default(); ohw * c],
            weights: vec![T::default(); shape.taps() * c],
            weights_of: None,
        }
    }

    /// The weights of `run`'s channels, as `[tap][channel]`.
    #[inline(always)]
    fn load_weights(&mut self, shape: &Depthwise, weight: &[T], run: Run) {
        let taps = shape.taps();
        let channel = run.plane % shape.channels;
        // Consecutive images' runs usually cover the same channels.
        if self.weights_of.replace((channel, run.channels)) == Some((channel, run.channels)) {
            return;
        }
        transpose_in(
            &weight[channel * taps..][..run.channels * taps],
            taps,
            &mut self.weights,
        );
    }
}

/// `src` is `rows` values per channel (`[channel][row]`); writes
/// `[row][channel]` into the front of `dst`. The `transpose` crate's tiled
/// copy: twice as fast as a plain loop on these shapes (16 × 1,152 in 6.4
/// µs against 13.2; `docs/BENCHMARKS.md`).
#[inline(always)]
fn transpose_in<T: Real>(src: &[T], rows: usize, dst: &mut [T]) {
    transpose::transpose(src, &mut dst[..src.len()], rows, src.len() / rows);
}

/// The reverse of [`transpose_in`]: `src` is `[row][channel]`, `dst`
/// `[channel][row]`.
#[inline(always)]
fn transpose_out<T: Real>(src: &[T], rows: usize, channels: usize, dst: &mut [T]) {
    transpose::transpose(&src[..rows * channels], dst, channels, rows);
}
