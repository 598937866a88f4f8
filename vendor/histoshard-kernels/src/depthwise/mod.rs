//! A depthwise convolution (weight `[C, 1, kh, kw]`, `groups == C`) and its
//! two gradients, computed directly (`x` padded, stride `s`, dilation `d`):
//!
//! - output: `y[n, c, oy, ox] = Σ_{i, j} W[c, 0, i, j] · x[n, c, oy·s + i·d, ox·s + j·d]`;
//! - weight: `dW[c, 0, i, j] = Σ_n Σ_{oy, ox} g[n, c, oy, ox] · x[n, c, oy·s + i·d, ox·s + j·d]`;
//! - input (a depthwise transposed convolution):
//!   `dx[n, c, oy·s + i·d, ox·s + j·d] += g[n, c, oy, ox] · W[c, 0, i, j]`.
//!
//! Two ways to vectorise them ([`Strategy`]), chosen by the size of the
//! output plane ([`Depthwise::strategy`]):
//!
//! - [`planes`]: one `(n, c)` plane at a time, each tap one pass over the
//!   whole plane. Good where planes are large (the first blocks of a
//!   network).
//! - [`channels_last`]: a run of channels of one image transposed to
//!   `[pixel][channel]`, each sum (an output pixel over its taps, an input
//!   pixel over its contributions, a tap over the pixels) held in registers
//!   over blocks of channels. Good where planes are small and channels many
//!   (the last blocks: 4×4 planes of 1,152 channels in EfficientNet-Lite0 on
//!   112-px patches, where a plane's pass is 16 values long).
//!
//! [`channels_last`] is compiled for AVX-512 and AVX2 besides the baseline
//! and picks one at run time (`multiversion`): the crate is built for any
//! x86-64, whose baseline has 128-bit vectors only. That made its first
//! version (before the sums in registers) 12–15% faster on
//! EfficientNet-Lite0's layers; [`planes`] ran 3–7% slower so
//! compiled, and is not
//! (`examples/bench_depthwise.rs`, docs/BENCHMARKS.md).
//!
//! Why not the backends' own kernels: oneDNN 3.7 (LibTorch's CPU
//! convolutions) has a depthwise backward-weights kernel for 3×3 only and
//! falls back to im2col + GEMM for EfficientNet's 5×5 ones, seconds a call;
//! burn-flex's own depthwise kernel works a row of a plane at a time, and
//! burn's generic weight gradient does one full convolution per channel
//! (docs/BENCHMARKS.md).

mod channels_last;
mod planes;

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

/// Output planes of at most this many values run channels-last: measured
/// per layer of EfficientNet-Lite0 at 112 and 224 px (`examples/bench_depthwise.rs`,
/// docs/BENCHMARKS.md).
const CHANNELS_LAST_MAX_PLANE: usize = 14 * 14;

/// How a [`Depthwise`] convolution is vectorised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// [`planes`]: one plane at a time, a pass over the plane per tap.
    Planes,
    /// [`channels_last`]: a run of channels transposed, each sum over a
    /// block of channels at a time.
    ChannelsLast,
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

    /// The faster way for this geometry: [`Strategy::ChannelsLast`] for
    /// output planes of up to 14×14, [`Strategy::Planes`] above. Both give
    /// the same output and input gradient bit for bit (each value sums its
    /// terms in the same order); the weight gradient sums in another order.
    pub fn strategy(&self) -> Strategy {
        if self.out[0] * self.out[1] <= CHANNELS_LAST_MAX_PLANE {
            Strategy::ChannelsLast
        } else {
            Strategy::Planes
        }
    }

    /// Writes the output planes `first .. first + out.len() / (oh·ow)` (plane
    /// `p` is batch item `p / C`, channel `p % C`) into `out`, overwriting
    /// it; `weight` is `[C, kh·kw]`, and there is no bias. Callers split the
    /// planes over their threads, one call per range.
    ///
    /// # Panics
    /// If `x`, `weight` or `out` is not of the size the geometry says.
    pub fn forward<T: Real>(&self, x: &[T], weight: &[T], first: usize, out: &mut [T]) {
        self.forward_by(self.strategy(), x, weight, first, out);
    }

    /// [`Depthwise::forward`] the way `strategy` says.
    pub fn forward_by<T: Real>(
        &self,
        strategy: Strategy,
        x: &[T],
        weight: &[T],
        first: usize,
        out: &mut [T],
    ) {
        let plane = self.out[0] * self.out[1];
        assert_eq!(x.len(), self.input_len());
        assert_eq!(weight.len(), self.channels * self.taps());
        assert!(out.len() % plane.max(1) == 0);
        assert!(first + out.len() / plane.max(1) <= self.batch * self.channels);
        if self.is_empty() || self.taps() == 0 {
            out.fill(T::default());
            return;
        }
        match strategy {
            Strategy::ChannelsLast => channels_last::forward(self, x, weight, first, out),
            Strategy::Planes => planes::forward(self, x, weight, first, out),
        }
    }

    /// Writes the gradient of channels `first .. first + out.len() / taps()`
    /// into `out` (`[channel][kh][kw]`), overwriting it. Callers split the
    /// channels over their threads, one call per range; the result does not
    /// depend on how.
    ///
    /// # Panics
    /// If `x`, `grad` or `out` is not of the size the geometry says.
    pub fn weight_grad<T: Real>(&self, x: &[T], grad: &[T], first: usize, out: &mut [T]) {
        self.weight_grad_by(self.strategy(), x, grad, first, out);
    }

    /// [`Depthwise::weight_grad`] the way `strategy` says.
    pub fn weight_grad_by<T: Real>(
        &self,
        strategy: Strategy,
        x: &[T],
        grad: &[T],
        first: usize,
        out: &mut [T],
    ) {
        let taps = self.taps();
        assert_eq!(x.len(), self.input_len());
        assert_eq!(grad.len(), self.output_len());
        assert!(out.len() % taps.max(1) == 0 && first + out.len() / taps.max(1) <= self.channels);
        if self.is_empty() || taps == 0 {
            out.fill(T::default());
            return;
        }
        match strategy {
            Strategy::ChannelsLast => channels_last::weight_grad(self, x, grad, first, out),
            Strategy::Planes => planes::weight_grad(self, x, grad, first, out),
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
        self.input_grad_by(self.strategy(), weight, grad, first, out);
    }

    /// [`Depthwise::input_grad`] the way `strategy` says.
    pub fn input_grad_by<T: Real>(
        &self,
        strategy: Strategy,
        weight: &[T],
        grad: &[T],
        first: usize,
        out: &mut [T],
    ) {
        let plane = self.input[0] * self.input[1];
        assert_eq!(weight.len(), self.channels * self.taps());
        assert_eq!(grad.len(), self.output_len());
        assert!(out.len() % plane.max(1) == 0);
        assert!(first + out.len() / plane.max(1) <= self.batch * self.channels);
        if self.is_empty() || self.taps() == 0 {
            out.fill(T::default());
            return;
        }
        match strategy {
            Strategy::ChannelsLast => channels_last::input_grad(self, weight, grad, first, out),
            Strategy::Planes => planes::input_grad(self, weight, grad, first, out),
        }
    }

    fn input_len(&self) -> usize {
        self.batch * self.channels * self.input[0] * self.input[1]
    }

    fn output_len(&self) -> usize {
        self.batch * self.channels * self.out[0] * self.out[1]
    }
}
