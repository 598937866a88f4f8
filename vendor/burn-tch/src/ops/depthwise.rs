//! histoshard (vendor/README.md, change 6): the weight gradient of a
//! depthwise convolution on the CPU, computed directly.
//!
//! oneDNN 3.7's depthwise backward-weights kernel (`jit_dw`) takes 3×3
//! kernels only; every other depthwise kernel (EfficientNet's 5×5 ones) falls
//! back to its generic im2col + GEMM convolution, which on the 2-core CPU
//! took seconds a call where the arithmetic is tens of milliseconds
//! (docs/BENCHMARKS.md); PyTorch pays the same. The 3×3 ones are faster here
//! too, with no second forward pass (change 1 reaches oneDNN's kernel through
//! autograd), so every depthwise convolution on the CPU takes this path.
//!
//! `dW[c, 0, i, j] = Σ_n Σ_{oy, ox} grad[n, c, oy, ox] · x[n, c, oy·s + i·d, ox·s + j·d]`
//!
//! (`x` padded, stride `s`, dilation `d`). Each thread takes a range of
//! channels, and for each `(n, c)` copies the input plane into its
//! `s_y·s_x` polyphase planes (`x_padded[a + s_y·y, b + s_x·x]` for each
//! phase `(a, b)`, the padding as zeros), in which every tap is a stride-1
//! shift, and the output-gradient plane, zero-padded on the right to the
//! planes' width. Each tap's sum over the plane is then one contiguous dot
//! product (the padded columns add zero), in 16 lanes that the compiler
//! vectorises. Both copies stay in the thread's cache; the tensors are read
//! once. The channels are split over LibTorch's intra-op thread count.

use tch::{Device, Kind, Tensor};

/// `Some(weight gradient)` for a depthwise convolution (weight `[C, 1, kh, kw]`,
/// `groups == C`, `C` input channels) of `f32` CPU tensors; `None` for every
/// other convolution, which keeps LibTorch's backward kernel. `x` is the input with
/// any asymmetric padding already applied; `padding` is the symmetric rest.
pub(crate) fn weight_grad(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
) -> Option<Tensor> {
    let w = weight.size();
    let xs = x.size();
    let gs = grad.size();
    let cpu_f32 = |t: &Tensor| t.device() == Device::Cpu && t.kind() == Kind::Float;
    if w.len() != 4 || xs.len() != 4 || gs.len() != 4 {
        return None;
    }
    let channels = w[0];
    let depthwise =
        w[1] == 1 && groups as i64 == channels && xs[1] == channels && gs[1] == channels;
    if !(depthwise && cpu_f32(x) && cpu_f32(weight) && cpu_f32(grad)) {
        return None;
    }
    let dims = |v: &[i64]| v.iter().map(|&d| d as usize).collect::<Vec<_>>();
    let (xs, gs, w) = (dims(&xs), dims(&gs), dims(&w));
    let shape = Shape {
        batch: xs[0],
        channels: xs[1],
        kernel: [w[2], w[3]],
        out: [gs[2], gs[3]],
        stride,
        dilation,
    };
    if [shape.batch, shape.channels, xs[2], xs[3]].contains(&0) || shape.out.contains(&0) {
        return None;
    }

    let x = x.contiguous();
    let grad = grad.contiguous();
    // SAFETY: both tensors are contiguous f32 CPU tensors (checked above, made
    // contiguous just now) that outlive the slices, and nothing writes to them
    // while the slices are read.
    let x_data = unsafe { cpu_slice(&x) };
    let grad_data = unsafe { cpu_slice(&grad) };
    let input = [xs[2], xs[3]];
    let padded = [0, 1].map(|k| input[k] + 2 * padding[k]);
    // The polyphase planes' size: `plane[a][b][y][x] = x_padded[y·s_y + a][x·s_x + b]`.
    let plane = [0, 1].map(|k| padded[k].div_ceil(stride[k]));
    let taps = shape.kernel[0] * shape.kernel[1];
    let mut out = vec![0f32; shape.channels * taps];
    let threads = (tch::get_num_threads().max(1) as usize).min(shape.channels);
    let per_thread = shape.channels.div_ceil(threads);
    let geometry = Geometry {
        shape: &shape,
        input,
        padding,
        plane,
    };
    std::thread::scope(|scope| {
        for (t, chunk) in out.chunks_mut(per_thread * taps).enumerate() {
            let geometry = &geometry;
            scope.spawn(move || {
                let mut buffers = Buffers::new(geometry);
                for (k, result) in chunk.chunks_mut(taps).enumerate() {
                    let c = t * per_thread + k;
                    for n in 0..geometry.shape.batch {
                        buffers.load(geometry, x_data, grad_data, n, c);
                        buffers.accumulate(geometry, result);
                    }
                }
            });
        }
    });
    Some(Tensor::from_slice(&out).view([
        shape.channels as i64,
        1,
        shape.kernel[0] as i64,
        shape.kernel[1] as i64,
    ]))
}

struct Shape {
    batch: usize,
    channels: usize,
    kernel: [usize; 2],
    out: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
}

/// Where one input plane goes in the polyphase planes.
struct Geometry<'a> {
    shape: &'a Shape,
    input: [usize; 2],
    padding: [usize; 2],
    plane: [usize; 2],
}

/// One thread's copies of one `(n, c)` input plane, split into its
/// polyphase planes with the padding as zeros, and of its output-gradient
/// plane, zero-padded on the right to the planes' width: the padding
/// positions are the same for every plane, so they are zeroed once.
struct Buffers {
    phases: Vec<f32>,
    grad: Vec<f32>,
}

impl Buffers {
    fn new(geometry: &Geometry) -> Self {
        let [sy, sx] = geometry.shape.stride;
        let [hq, wq] = geometry.plane;
        Self {
            phases: vec![0.0; sy * sx * hq * wq],
            grad: vec![0.0; geometry.shape.out[0] * wq],
        }
    }

    fn load(&mut self, geometry: &Geometry, x: &[f32], grad: &[f32], n: usize, c: usize) {
        let shape = geometry.shape;
        let [h, w] = geometry.input;
        let [py, px] = geometry.padding;
        let [sy, sx] = shape.stride;
        let [hq, wq] = geometry.plane;
        let index = n * shape.channels + c;
        let x = &x[index * h * w..][..h * w];
        for (y, row) in x.chunks_exact(w).enumerate() {
            let (row_index, a) = ((y + py) / sy, (y + py) % sy);
            for b in 0..sx {
                // The columns x with (x + px) % sx == b, from col (x + px) / sx on.
                let first = (b + sx - px % sx) % sx;
                if first >= w {
                    continue;
                }
                let col = (first + px) / sx;
                let dest = &mut self.phases[((a * sx + b) * hq + row_index) * wq + col..];
                for (d, v) in dest.iter_mut().zip(row[first..].iter().step_by(sx)) {
                    *d = *v;
                }
            }
        }
        let [oh, ow] = shape.out;
        let g = &grad[index * oh * ow..][..oh * ow];
        for (dest, row) in self.grad.chunks_exact_mut(wq).zip(g.chunks_exact(ow)) {
            dest[..ow].copy_from_slice(row);
        }
    }

    /// Adds this plane's `kh·kw` gradient values to `result`.
    fn accumulate(&self, geometry: &Geometry, result: &mut [f32]) {
        let shape = geometry.shape;
        let [sy, sx] = shape.stride;
        let [dy, dx] = shape.dilation;
        let [kh, kw] = shape.kernel;
        let [hq, wq] = geometry.plane;
        // Each tap's dot product runs over the output rows at the planes'
        // width, the last row only to its end.
        let len = (shape.out[0] - 1) * wq + shape.out[1];
        let g = &self.grad[..len];
        for i in 0..kh {
            let (row, a) = ((i * dy) / sy, (i * dy) % sy);
            for j in 0..kw {
                let (col, b) = ((j * dx) / sx, (j * dx) % sx);
                let start = ((a * sx + b) * hq + row) * wq + col;
                result[i * kw + j] += dot(g, &self.phases[start..][..len]);
            }
        }
    }
}

/// `Σ a[k]·b[k]` in 16 lanes, which the compiler vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let (a_chunks, a_tail) = a.as_chunks::<LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for ((sum, x), y) in acc.iter_mut().zip(x).zip(y) {
            *sum += x * y;
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// The elements of a contiguous f32 CPU tensor.
///
/// # Safety
/// `tensor` must be a contiguous CPU tensor of kind `Float`, alive and not
/// written to while the slice is used.
unsafe fn cpu_slice(tensor: &Tensor) -> &[f32] {
    let len = tensor.numel();
    if len == 0 {
        return &[];
    }
    // SAFETY: per the contract, `len` f32 values start at the data pointer.
    unsafe { std::slice::from_raw_parts(tensor.data_ptr() as *const f32, len) }
}
