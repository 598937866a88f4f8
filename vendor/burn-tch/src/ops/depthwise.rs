//! histoshard (vendor/README.md, change 6): the weight gradient of a
//! depthwise convolution on the CPU, computed directly by
//! `histoshard_kernels::depthwise` (its doc says how and why; vendor/burn-flex
//! runs the same kernel). oneDNN 3.7's depthwise backward-weights kernel
//! (`jit_dw`) takes 3×3 kernels only; every other depthwise kernel
//! (EfficientNet's 5×5 ones) falls back to its generic im2col + GEMM
//! convolution, which on the 2-core CPU took seconds a call where the
//! arithmetic is tens of milliseconds (docs/BENCHMARKS.md); PyTorch pays the
//! same. The 3×3 ones are faster here too, with no second forward pass
//! (change 1 reaches oneDNN's kernel through autograd), so every depthwise
//! convolution on the CPU takes this path. The channels are split over
//! LibTorch's intra-op thread count.

use histoshard_kernels::depthwise::Depthwise;
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
    let shape = Depthwise {
        batch: xs[0],
        channels: xs[1],
        input: [xs[2], xs[3]],
        padding,
        kernel: [w[2], w[3]],
        out: [gs[2], gs[3]],
        stride,
        dilation,
    };
    if shape.is_empty() {
        return None;
    }

    let x = x.contiguous();
    let grad = grad.contiguous();
    // SAFETY: both tensors are contiguous f32 CPU tensors (checked above, made
    // contiguous just now) that outlive the slices, and nothing writes to them
    // while the slices are read.
    let x_data = unsafe { cpu_slice(&x) };
    let grad_data = unsafe { cpu_slice(&grad) };
    let taps = shape.taps();
    let mut out = vec![0f32; shape.channels * taps];
    let threads = (tch::get_num_threads().max(1) as usize).min(shape.channels);
    let per_thread = shape.channels.div_ceil(threads);
    std::thread::scope(|scope| {
        for (t, chunk) in out.chunks_mut(per_thread * taps).enumerate() {
            let shape = &shape;
            scope.spawn(move || shape.weight_grad(x_data, grad_data, t * per_thread, chunk));
        }
    });
    Some(Tensor::from_slice(&out).view([
        shape.channels as i64,
        1,
        shape.kernel[0] as i64,
        shape.kernel[1] as i64,
    ]))
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
