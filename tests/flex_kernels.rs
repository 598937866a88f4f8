//! flex's own training kernels (vendor/burn-flex: the convolution weight
//! gradient, change 1, whose depthwise case is `vendor/histoshard-kernels`,
//! the kernel vendor/burn-tch runs too; batch norm, change 2) against plain
//! f64 loops written from the definitions, on the convolutions of
//! `common/kernels.rs` and on batch norm of rank 2, 3 and 4 with a constant
//! channel; histoshard's ReLU6 operation (`src/train/ops/`) against
//! min(max(x, 0), 6); the two strategies of `histoshard_kernels::depthwise`
//! against each other. `libtorch_gradients.rs` then checks LibTorch against
//! flex.

#![cfg(feature = "flex")]

#[path = "common/kernels.rs"]
mod kernels;

use histoshard::train::learner::DeviceChoice;
use histoshard_kernels::depthwise::{Depthwise, Strategy};
use kernels::{
    BATCH_NORM_RELU6_RESULTS, BATCH_NORM_RESULTS, CONV_RESULTS, Case, activation_input,
    activation_results, batch_norm_input, batch_norm_output_grad, batch_norm_relu6_results,
    batch_norm_results, conv_cases, gradients, values,
};

/// Every value within `tolerance` of the reference's largest magnitude (or 1).
fn assert_close(want: &[f64], got: &[f32], tolerance: f64, what: &str) {
    assert_eq!(want.len(), got.len(), "{what}: size");
    let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
    for (k, (w, g)) in want.iter().zip(got).enumerate() {
        assert!(
            (w - *g as f64).abs() <= tolerance * scale,
            "{what}: element {k} is {g}, the reference's {w} (largest {scale})"
        );
    }
}

/// y = conv2d(x, w, b) and the gradients of Σ y ⊙ g, with the inputs of
/// `kernels::gradients`, from the definition: `y[n, o, oy, ox] = b[o] +
/// Σ w[o, i, ky, kx] · x[n, group·C_in/g + i, oy·s + ky·d − p, ox·s + kx·d − p]`.
fn reference_gradients(case: &Case) -> [Vec<f64>; 4] {
    let [batch, c_in, h, w] = case.input;
    let [c_out, c_in_group, kh, kw] = case.weight;
    let options = &case.options;
    let [(top, bottom), (left, right)] = options.padding;
    let [sy, sx] = options.stride;
    let [dy, dx] = options.dilation;
    let oh = (h + top + bottom - dy * (kh - 1) - 1) / sy + 1;
    let ow = (w + left + right - dx * (kw - 1) - 1) / sx + 1;
    let widen = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
    let x = widen(values(case.input.iter().product(), 1));
    let weight = widen(values(case.weight.iter().product(), 2));
    let g = widen(values(batch * c_out * oh * ow, 4));
    let bias = widen(values(c_out, 3));
    let (mut y, mut x_grad, mut w_grad, mut b_grad) = (
        vec![0.0; g.len()],
        vec![0.0; x.len()],
        vec![0.0; weight.len()],
        vec![0.0; c_out],
    );
    let c_out_group = c_out / options.groups;
    for n in 0..batch {
        for o in 0..c_out {
            let group = o / c_out_group;
            for oy in 0..oh {
                for ox in 0..ow {
                    let yi = ((n * c_out + o) * oh + oy) * ow + ox;
                    let go = g[yi];
                    y[yi] += bias[o];
                    b_grad[o] += go;
                    for i in 0..c_in_group {
                        let c = group * c_in_group + i;
                        for ky in 0..kh {
                            let Some(iy) = (oy * sy + ky * dy).checked_sub(top) else {
                                continue;
                            };
                            for kx in 0..kw {
                                let Some(ix) = (ox * sx + kx * dx).checked_sub(left) else {
                                    continue;
                                };
                                if iy >= h || ix >= w {
                                    continue;
                                }
                                let xi = ((n * c_in + c) * h + iy) * w + ix;
                                let wi = ((o * c_in_group + i) * kh + ky) * kw + kx;
                                y[yi] += weight[wi] * x[xi];
                                w_grad[wi] += go * x[xi];
                                x_grad[xi] += go * weight[wi];
                            }
                        }
                    }
                }
            }
        }
    }
    [y, x_grad, w_grad, b_grad]
}

#[test]
fn flex_convolution_gradients_match_the_definition() {
    let flex = DeviceChoice::Flex.device().expect("flex device");
    for case in &conv_cases() {
        let got = gradients(&flex, case);
        let want = reference_gradients(case);
        for (what, (w, g)) in CONV_RESULTS.iter().zip(want.iter().zip(&got)) {
            assert_close(w, g, 1e-5, &format!("{}: {what}", case.name));
        }
    }
}

/// What `kernels::batch_norm_results` returns, from the definitions in f64:
/// `y = γ·(x − mean)/√(var + ε) + β` with the given statistics, then with
/// the batch's (biased variance), and the gradients of Σ y ⊙ g.
fn reference_batch_norm(x: &[f32], shape: &[usize], epsilon: f64, g: &[f32]) -> [Vec<f64>; 7] {
    let channels = shape[1];
    let inner: usize = shape[2..].iter().product();
    let channel = |k: usize| (k / inner) % channels;
    let count = (x.len() / channels) as f64;
    let per_channel = |seed, offset: f64| -> Vec<f64> {
        values(channels, seed)
            .iter()
            .map(|&v| v as f64 + offset)
            .collect()
    };
    let (gamma, beta) = (per_channel(12, 1.5), per_channel(13, 0.0));
    let (running_mean, running_var) = (per_channel(14, 0.0), per_channel(15, 1.5));
    let normalize = |mean: &[f64], var: &[f64]| -> Vec<f64> {
        x.iter()
            .enumerate()
            .map(|(k, &v)| {
                let c = channel(k);
                gamma[c] * (v as f64 - mean[c]) / (var[c] + epsilon).sqrt() + beta[c]
            })
            .collect()
    };
    let mut mean = vec![0.0; channels];
    let mut var = vec![0.0; channels];
    x.iter()
        .enumerate()
        .for_each(|(k, &v)| mean[channel(k)] += v as f64 / count);
    x.iter().enumerate().for_each(|(k, &v)| {
        var[channel(k)] += (v as f64 - mean[channel(k)]).powi(2) / count;
    });
    let sigma: Vec<f64> = var.iter().map(|v| (v + epsilon).sqrt()).collect();
    let x_hat = |k: usize| (x[k] as f64 - mean[channel(k)]) / sigma[channel(k)];
    let (mut beta_grad, mut gamma_grad) = (vec![0.0; channels], vec![0.0; channels]);
    for (k, &gk) in g.iter().enumerate() {
        beta_grad[channel(k)] += gk as f64;
        gamma_grad[channel(k)] += gk as f64 * x_hat(k);
    }
    let x_grad = (0..x.len())
        .map(|k| {
            let c = channel(k);
            gamma[c] / sigma[c]
                * (g[k] as f64 - beta_grad[c] / count - x_hat(k) * gamma_grad[c] / count)
        })
        .collect();
    [
        normalize(&running_mean, &running_var),
        normalize(&mean, &var),
        mean.clone(),
        var.clone(),
        x_grad,
        gamma_grad,
        beta_grad,
    ]
}

/// The values of channel `c` of a `[.., channels, inner]`-shaped tensor.
fn channel_values<T: Copy>(v: &[T], c: usize, channels: usize, inner: usize) -> Vec<T> {
    let of = |k: &usize| (k / inner) % channels == c;
    (0..v.len()).filter(of).map(|k| v[k]).collect()
}

#[test]
fn flex_batch_norm_matches_the_definition() {
    let flex = DeviceChoice::Flex.device().expect("flex device");
    let what = BATCH_NORM_RESULTS;
    for epsilon in [1e-3, 1e-5] {
        for shape in [vec![4, 5, 6, 7], vec![3, 4, 10], vec![16, 6]] {
            let got = match shape[..] {
                [a, b, c, d] => batch_norm_results(&flex, [a, b, c, d], epsilon),
                [a, b, c] => batch_norm_results(&flex, [a, b, c], epsilon),
                [a, b] => batch_norm_results(&flex, [a, b], epsilon),
                _ => unreachable!(),
            };
            let x = batch_norm_input(&shape);
            let g = batch_norm_output_grad(x.len());
            let want = reference_batch_norm(&x, &shape, epsilon, &g);
            let name = format!("{shape:?}, epsilon {epsilon}");
            // The constant channel: variance exactly 0, output beta.
            assert_eq!(got[3][1], 0.0, "{name}: the constant channel's variance");
            let inner: usize = shape[2..].iter().product();
            for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                // Outputs and the input gradient are shaped as the input, the
                // rest [channels]. Each channel within 1e-5 of its own largest
                // value (the constant channel's input gradient is 1/√ε times
                // the others').
                let inner = if [0, 1, 4].contains(&i) { inner } else { 1 };
                for c in 0..shape[1] {
                    let (w, g) = (
                        channel_values(w, c, shape[1], inner),
                        channel_values(g, c, shape[1], inner),
                    );
                    let what = format!("{name}: {}, channel {c}", what[i]);
                    assert_close(&w, &g, 1e-5, &what);
                }
            }
        }
    }
}

/// A depthwise transposed convolution called directly (vendor/burn-flex
/// change 3 takes it), with a bias and an output padding, against
/// `out[n, c, oy·s + i·d − p, ox·s + j·d − p] += x[n, c, oy, ox] · w[c, 0, i, j]`, plus `b[c]`.
#[test]
fn flex_depthwise_transposed_convolution_matches_the_definition() {
    use burn::tensor::{Tensor, TensorData, module::conv_transpose2d, ops::ConvTransposeOptions};
    let device = DeviceChoice::Flex.device().expect("flex device");
    let ([batch, channels, oh, ow], [kh, kw]) = ([2, 3, 5, 4], [5, 3]);
    let (stride, padding, padding_out, dilation) = ([2, 2], [2, 1], [1, 0], [1, 2]);
    let x = values(batch * channels * oh * ow, 21);
    let w = values(channels * kh * kw, 22);
    let b = values(channels, 23);
    let got = conv_transpose2d(
        Tensor::<4>::from_data(
            TensorData::new(x.clone(), [batch, channels, oh, ow]),
            &device,
        ),
        Tensor::<4>::from_data(TensorData::new(w.clone(), [channels, 1, kh, kw]), &device),
        Some(Tensor::<1>::from_data(
            TensorData::new(b.clone(), [channels]),
            &device,
        )),
        ConvTransposeOptions::new(stride, padding, padding_out, dilation, channels),
    );
    let size = |k: usize, out: usize, kernel: usize| {
        (out - 1) * stride[k] + dilation[k] * (kernel - 1) + 1 + padding_out[k] - 2 * padding[k]
    };
    let (h, wd) = (size(0, oh, kh), size(1, ow, kw));
    assert_eq!(got.dims(), [batch, channels, h, wd]);
    let mut want = vec![0f64; batch * channels * h * wd];
    for n in 0..batch {
        for c in 0..channels {
            let plane = (n * channels + c) * h * wd;
            want[plane..plane + h * wd].fill(b[c] as f64);
            for (oy, ox, i, j) in (0..oh).flat_map(|oy| {
                (0..ow).flat_map(move |ox| {
                    (0..kh).flat_map(move |i| (0..kw).map(move |j| (oy, ox, i, j)))
                })
            }) {
                let y = (oy * stride[0] + i * dilation[0]).checked_sub(padding[0]);
                let xx = (ox * stride[1] + j * dilation[1]).checked_sub(padding[1]);
                if let (Some(y), Some(xx)) = (y, xx)
                    && y < h
                    && xx < wd
                {
                    want[plane + y * wd + xx] += x[((n * channels + c) * oh + oy) * ow + ox] as f64
                        * w[(c * kh + i) * kw + j] as f64;
                }
            }
        }
    }
    let got = got.into_data().try_to_vec::<f32>().unwrap();
    assert_close(&want, &got, 1e-5, "depthwise transposed convolution");
}

#[test]
fn flex_relu6_matches_the_definition() {
    // histoshard's ReLU6 operation (src/train/ops/relu6.rs): min(max(x, 0), 6)
    // exactly, and the gradient g where 0 < x < 6 (PyTorch's rule), on a
    // contiguous tensor and on a strided view of one; ReLU beside it.
    let flex = DeviceChoice::Flex.device().expect("flex device");
    let x = activation_input();
    let g = values(x.len(), 6);
    for six in [false, true] {
        for transposed in [false, true] {
            let name = format!(
                "{} (transposed: {transposed})",
                if six { "relu6" } else { "relu" }
            );
            let (y, grad) = activation_results(&flex, six, transposed);
            for (i, &xi) in x.iter().enumerate() {
                let want = if six { xi.clamp(0.0, 6.0) } else { xi.max(0.0) };
                assert_eq!(y[i], want, "{name}({xi})");
                let inside = xi > 0.0 && (!six || xi < 6.0);
                assert_eq!(grad[i], if inside { g[i] } else { 0.0 }, "{name}'({xi})");
            }
        }
    }
}

/// histoshard's ReLU6 of a training batch norm (`src/train/ops/
/// batch_norm_relu6.rs`, vendor/burn-flex change 9) is ReLU6 after burn's
/// batch norm bit for bit: output, running statistics, gradients.
#[test]
fn flex_batch_norm_relu6_is_relu6_of_batch_norm() {
    let flex = DeviceChoice::Flex.device().expect("flex device");
    let fused = batch_norm_relu6_results(&flex, true);
    let apart = batch_norm_relu6_results(&flex, false);
    let output = &fused[0];
    assert!(
        output.contains(&0.0) && output.contains(&6.0),
        "the clamp was not reached"
    );
    assert!(
        output.iter().any(|&v| v > 0.0 && v < 6.0),
        "nothing inside (0, 6)"
    );
    for (what, (f, a)) in BATCH_NORM_RELU6_RESULTS
        .iter()
        .zip(fused.iter().zip(&apart))
    {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(f), bits(a), "{what}");
    }
}

/// The 1×1 convolutions of small planes (vendor/burn-flex change 8) multiply
/// several batch items in one GEMM: each item's output and input gradient
/// are the bits it gets alone. Shapes: 3×3 planes in chunks of 7 items and a
/// remainder; 4×4 planes in chunks of 4 and 1; 2×2 planes with `k` over 512
/// and few output channels (the `gemm` crate's small-matrix blocking).
#[test]
fn flex_pointwise_products_do_not_depend_on_the_batch() {
    use burn::tensor::{Tensor, TensorData, module::conv2d, ops::ConvOptions};
    let device = DeviceChoice::Flex.device().expect("flex device").autodiff();
    let run = |x: Vec<f32>, w: &[f32], g: Vec<f32>, [batch, c_in, c_out, side]: [usize; 4]| {
        let x = Tensor::<4>::from_data(TensorData::new(x, [batch, c_in, side, side]), &device)
            .require_grad();
        let w = Tensor::<4>::from_data(TensorData::new(w.to_vec(), [c_out, c_in, 1, 1]), &device);
        let y = conv2d(
            x.clone(),
            w,
            None,
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        );
        let g = Tensor::<4>::from_data(TensorData::new(g, [batch, c_out, side, side]), &device);
        let out = kernels::flat(Some(y.clone()), "pointwise");
        let grads = (y * g).sum().backward();
        (
            out,
            kernels::flat(x.grad(&grads), "pointwise input gradient"),
        )
    };
    for [batch, c_in, c_out, side] in [[9, 24, 40, 3], [5, 96, 256, 4], [3, 600, 20, 2]] {
        let plane = side * side;
        let x = values(batch * c_in * plane, 31);
        let w = values(c_out * c_in, 32);
        let g = values(batch * c_out * plane, 33);
        let (y, x_grad) = run(x.clone(), &w, g.clone(), [batch, c_in, c_out, side]);
        for b in 0..batch {
            let item = |v: &[f32], c: usize| v[b * c * plane..][..c * plane].to_vec();
            let (y_b, x_grad_b) = run(item(&x, c_in), &w, item(&g, c_out), [1, c_in, c_out, side]);
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let name = format!("{batch}×{c_in}→{c_out} at {side}×{side}, item {b}");
            assert_eq!(bits(item(&y, c_out)), bits(y_b), "{name}: output");
            assert_eq!(
                bits(item(&x_grad, c_in)),
                bits(x_grad_b),
                "{name}: input gradient"
            );
        }
    }
}

/// A depthwise geometry: batch, channels, input `[h, w]`, kernel, stride,
/// dilation, and padding `[(before, after); 2]`.
fn depthwise(
    batch: usize,
    channels: usize,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: [(usize, usize); 2],
) -> Depthwise {
    let out = [0, 1].map(|k| {
        (input[k] + padding[k].0 + padding[k].1 - dilation[k] * (kernel[k] - 1) - 1) / stride[k] + 1
    });
    Depthwise {
        batch,
        channels,
        input,
        padding: padding.map(|p| p.0),
        kernel,
        out,
        stride,
        dilation,
    }
}

/// What one strategy gives for `shape` (output, input gradient, weight
/// gradient), each computed in ranges of `split` planes (channels for the
/// weight gradient), as the backends' threads split the work.
fn depthwise_results(shape: &Depthwise, strategy: Strategy, split: usize) -> [Vec<f32>; 3] {
    let (h, w) = (shape.input[0], shape.input[1]);
    let (oh, ow) = (shape.out[0], shape.out[1]);
    let planes = shape.batch * shape.channels;
    let x = values(planes * h * w, 21);
    let weight = values(shape.channels * shape.taps(), 22);
    let g = values(planes * oh * ow, 23);
    let mut y = vec![f32::NAN; planes * oh * ow];
    for (k, chunk) in y.chunks_mut(split * oh * ow).enumerate() {
        shape.forward_by(strategy, &x, &weight, k * split, chunk);
    }
    let mut dx = vec![f32::NAN; planes * h * w];
    for (k, chunk) in dx.chunks_mut(split * h * w).enumerate() {
        shape.input_grad_by(strategy, &weight, &g, k * split, chunk);
    }
    let mut dw = vec![f32::NAN; weight.len()];
    for (k, chunk) in dw.chunks_mut(split * shape.taps()).enumerate() {
        shape.weight_grad_by(strategy, &x, &g, k * split, chunk);
    }
    [y, dx, dw]
}

/// `histoshard_kernels::depthwise`'s two strategies agree: the output and the
/// input gradient bit for bit (each value sums its terms in the same order),
/// the weight gradient within float rounding; and neither depends on how the
/// planes are split into calls (ranges that start and end inside an image
/// too). The definition tests above reach both through flex.
#[test]
fn depthwise_strategies_agree() {
    let shapes = [
        depthwise(3, 7, [4, 4], [5, 5], [1, 1], [1, 1], [(2, 2), (2, 2)]),
        depthwise(2, 5, [7, 7], [5, 5], [2, 2], [1, 1], [(1, 2), (1, 2)]),
        depthwise(2, 6, [9, 8], [3, 3], [2, 1], [1, 2], [(0, 1), (2, 2)]),
        depthwise(1, 4, [13, 11], [5, 3], [1, 1], [2, 1], [(4, 4), (1, 1)]),
        depthwise(2, 3, [20, 20], [3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)]),
        depthwise(2, 3, [10, 10], [7, 7], [3, 3], [1, 1], [(0, 0), (0, 0)]),
    ];
    let picked: Vec<Strategy> = shapes.iter().map(Depthwise::strategy).collect();
    assert!(picked.contains(&Strategy::Planes) && picked.contains(&Strategy::ChannelsLast));
    let what = ["output", "input gradient", "weight gradient"];
    for shape in &shapes {
        let whole = shape.batch * shape.channels;
        let planes = depthwise_results(shape, Strategy::Planes, whole);
        for split in [whole, 4, 1] {
            let last = depthwise_results(shape, Strategy::ChannelsLast, split);
            for (k, name) in what.iter().enumerate().take(2) {
                assert!(
                    planes[k]
                        .iter()
                        .map(|v| v.to_bits())
                        .eq(last[k].iter().map(|v| v.to_bits())),
                    "{shape:?}, split {split}: {name} differs"
                );
            }
            let want: Vec<f64> = planes[2].iter().map(|&v| f64::from(v)).collect();
            assert_close(
                &want,
                &last[2],
                1e-6,
                &format!("{shape:?}, split {split}: {}", what[2]),
            );
        }
        let split_planes = depthwise_results(shape, Strategy::Planes, 4);
        assert_eq!(
            split_planes, planes,
            "{shape:?}: planes split into calls of 4"
        );
    }
}
