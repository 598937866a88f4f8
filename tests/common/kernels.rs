//! Inputs and results shared by the gradient tests: `flex_kernels.rs` checks
//! flex against references computed here in f64, `libtorch_gradients.rs`
//! checks LibTorch against flex. Each of them uses a part of this file.

use burn::tensor::{
    Device, Tensor, TensorData,
    activation::relu,
    module::{batch_norm, batch_norm_train, conv2d},
    ops::ConvOptions,
};
use histoshard::train::ops::relu6::relu6;

/// Values in [-1, 1) from a xorshift stream: reproducible, no two alike.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

pub struct Case {
    pub name: &'static str,
    pub input: [usize; 4],
    pub weight: [usize; 4],
    pub options: ConvOptions<2>,
}

/// The output y = conv2d(x, w, b), and the gradients of Σ y ⊙ g with
/// respect to x, w and b: [`CONV_RESULTS`].
pub fn gradients(device: &Device, case: &Case) -> [Vec<f32>; 4] {
    let device = device.clone().autodiff();
    let tensor = |shape: [usize; 4], seed| {
        let n = shape.iter().product();
        Tensor::<4>::from_data(TensorData::new(values(n, seed), shape), &device).require_grad()
    };
    let x = tensor(case.input, 1);
    let w = tensor(case.weight, 2);
    let b = Tensor::<1>::from_data(
        TensorData::new(values(case.weight[0], 3), [case.weight[0]]),
        &device,
    )
    .require_grad();
    let y = conv2d(x.clone(), w.clone(), Some(b.clone()), case.options.clone());
    let g = Tensor::<4>::from_data(
        TensorData::new(values(y.shape().num_elements(), 4), y.dims()),
        &device,
    );
    let output = flat(Some(y.clone()), case.name);
    let grads = (y * g).sum().backward();
    [
        output,
        flat(x.grad(&grads), case.name),
        flat(w.grad(&grads), case.name),
        flat(b.grad(&grads), case.name),
    ]
}

/// What [`gradients`] returns, in order.
pub const CONV_RESULTS: [&str; 4] = [
    "output",
    "input gradient",
    "weight gradient",
    "bias gradient",
];

pub fn flat<const D: usize>(grad: Option<Tensor<D>>, case: &str) -> Vec<f32> {
    let grad = grad.unwrap_or_else(|| panic!("{case}: no gradient"));
    grad.into_data().try_to_vec::<f32>().unwrap()
}

/// The convolutions the models use, and the shapes the direct kernels
/// (vendor/burn-flex change 1, vendor/burn-tch change 6; the depthwise one is
/// `vendor/histoshard-kernels`) must get right: plain, strided, dilated,
/// grouped, depthwise, pointwise, asymmetric "same" padding, kernels other
/// than 3×3, batches of 1 to 3.
pub fn conv_cases() -> Vec<Case> {
    vec![
        Case {
            name: "plain 3×3",
            input: [2, 3, 9, 9],
            weight: [4, 3, 3, 3],
            options: ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        },
        Case {
            name: "stride 2, no padding",
            input: [2, 4, 10, 10],
            weight: [5, 4, 3, 3],
            options: ConvOptions::new([2, 2], [0, 0], [1, 1], 1),
        },
        Case {
            name: "dilation 2",
            input: [1, 3, 11, 11],
            weight: [2, 3, 3, 3],
            options: ConvOptions::new([1, 1], [2, 2], [2, 2], 1),
        },
        Case {
            name: "two groups",
            input: [2, 4, 8, 8],
            weight: [6, 2, 3, 3],
            options: ConvOptions::new([1, 1], [1, 1], [1, 1], 2),
        },
        Case {
            // An output plane above 14×14: histoshard-kernels' plane-at-a-time
            // strategy (the smaller ones run channels-last).
            name: "depthwise 3×3, 17×16 planes",
            input: [2, 3, 17, 16],
            weight: [3, 1, 3, 3],
            options: ConvOptions::new([1, 1], [1, 1], [1, 1], 3),
        },
        Case {
            name: "depthwise 5×5, stride 2",
            input: [2, 6, 12, 12],
            weight: [6, 1, 5, 5],
            options: ConvOptions::new([2, 2], [2, 2], [1, 1], 6),
        },
        Case {
            name: "depthwise, asymmetric padding",
            input: [1, 4, 10, 10],
            weight: [4, 1, 3, 3],
            options: ConvOptions::new_with_padding([2, 2], [(0, 1), (0, 1)], [1, 1], 4),
        },
        Case {
            name: "depthwise 5×5, stride 2, asymmetric padding",
            input: [2, 3, 12, 12],
            weight: [3, 1, 5, 5],
            options: ConvOptions::new_with_padding([2, 2], [(1, 2), (1, 2)], [1, 1], 3),
        },
        // The depthwise weight gradient that vendor/burn-tch computes itself on
        // the CPU (every kernel but 3×3; vendor/README.md, change 5): batches,
        // strides and dilations, square and not, with asymmetric padding.
        Case {
            name: "depthwise 5×5, dilation 2, batch 3",
            input: [3, 4, 13, 13],
            weight: [4, 1, 5, 5],
            options: ConvOptions::new([1, 1], [4, 4], [2, 2], 4),
        },
        Case {
            name: "depthwise 5×5, stride 2, dilation 2, asymmetric padding, not square",
            input: [2, 5, 15, 14],
            weight: [5, 1, 5, 5],
            options: ConvOptions::new_with_padding([2, 2], [(3, 4), (4, 3)], [2, 2], 5),
        },
        Case {
            name: "depthwise 5×3, stride (2, 1), dilation (1, 2)",
            input: [2, 3, 11, 10],
            weight: [3, 1, 5, 3],
            options: ConvOptions::new_with_padding([2, 1], [(1, 2), (2, 2)], [1, 2], 3),
        },
        Case {
            name: "depthwise 7×7, stride 3, no padding",
            input: [2, 4, 17, 16],
            weight: [4, 1, 7, 7],
            options: ConvOptions::new([3, 3], [0, 0], [1, 1], 4),
        },
        Case {
            name: "depthwise 3×3, stride 2, dilation 2, asymmetric padding",
            input: [2, 4, 12, 11],
            weight: [4, 1, 3, 3],
            options: ConvOptions::new_with_padding([2, 2], [(1, 2), (2, 1)], [2, 2], 4),
        },
        Case {
            name: "asymmetric padding, more before than after, dilated",
            input: [2, 3, 9, 8],
            weight: [4, 3, 3, 3],
            options: ConvOptions::new_with_padding([2, 1], [(2, 1), (3, 0)], [1, 2], 1),
        },
        Case {
            name: "pointwise 1×1",
            input: [3, 8, 5, 5],
            weight: [16, 8, 1, 1],
            options: ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        },
        // An expansion of EfficientNet's shape: flex splits its input gradient
        // over the batch by the GEMMs' work although the gradient is small,
        // and its weight gradient (over 16 K values) adds the batch's partial
        // sums in parallel chunks (vendor/burn-flex change 6).
        Case {
            name: "pointwise 1×1, narrow to wide, 4×4 planes",
            input: [4, 96, 4, 4],
            weight: [256, 96, 1, 1],
            options: ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        },
        // Small planes: flex multiplies 7 items of 3×3 at a time, then the
        // remaining 2 (vendor/burn-flex change 8).
        Case {
            name: "pointwise 1×1, 3×3 planes, 9 items",
            input: [9, 24, 3, 3],
            weight: [40, 24, 1, 1],
            options: ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        },
    ]
}

/// Batch norm's input: an offset and a scale per channel, as activations
/// have; channel 1 is constant (variance 0: the output is beta, the input
/// gradient finite).
pub fn batch_norm_input(shape: &[usize]) -> Vec<f32> {
    let channels = shape[1];
    let inner: usize = shape[2..].iter().product();
    values(shape.iter().product(), 11)
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let c = (i / inner) % channels;
            if c == 1 {
                0.75
            } else {
                v * (1.0 + c as f32) + 0.5 * c as f32 - 1.0
            }
        })
        .collect()
}

/// The output gradient `g` of [batch_norm_results] (of `n` values).
pub fn batch_norm_output_grad(n: usize) -> Vec<f32> {
    values(n, 16)
}

/// What each of [batch_norm_results]' seven results is.
pub const BATCH_NORM_RESULTS: [&str; 7] = [
    "inference output",
    "training output",
    "batch mean",
    "batch variance",
    "x gradient",
    "gamma gradient",
    "beta gradient",
];

/// What batch norm gives for [batch_norm_input]: the inference output (given
/// running statistics), then in training mode the output, the batch mean and
/// biased variance, and the gradients of Σ y ⊙ g with respect to x, gamma and
/// beta ([batch_norm_output_grad]).
pub fn batch_norm_results<const D: usize>(
    device: &Device,
    shape: [usize; D],
    epsilon: f64,
) -> [Vec<f32>; 7] {
    let n: usize = shape.iter().product();
    let channels = shape[1];
    let x = batch_norm_input(&shape);
    let per_channel = |seed, offset: f32| {
        let v: Vec<f32> = values(channels, seed).iter().map(|v| v + offset).collect();
        TensorData::new(v, [channels])
    };
    let plain = |device: &Device| {
        let x = Tensor::<D>::from_data(TensorData::new(x.clone(), shape), device);
        let gamma = Tensor::<1>::from_data(per_channel(12, 1.5), device);
        let beta = Tensor::<1>::from_data(per_channel(13, 0.0), device);
        (x, gamma, beta)
    };

    let (x0, gamma0, beta0) = plain(device);
    let mean0 = Tensor::<1>::from_data(per_channel(14, 0.0), device);
    let variance0 = Tensor::<1>::from_data(per_channel(15, 1.5), device);
    let inference = batch_norm(x0, gamma0, beta0, mean0, variance0, epsilon);

    let autodiff = device.clone().autodiff();
    let (x, gamma, beta) = plain(&autodiff);
    let (x, gamma, beta) = (x.require_grad(), gamma.require_grad(), beta.require_grad());
    let result = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), epsilon);
    let g = Tensor::<D>::from_data(TensorData::new(batch_norm_output_grad(n), shape), &autodiff);
    let grads = (result.output.clone() * g).sum().backward();
    let data = |t: Tensor<D>| t.into_data().try_to_vec::<f32>().unwrap();
    let stat = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
    [
        data(inference),
        data(result.output),
        stat(result.mean),
        stat(result.variance),
        flat(x.grad(&grads), "batch norm x"),
        flat(gamma.grad(&grads), "batch norm gamma"),
        flat(beta.grad(&grads), "batch norm beta"),
    ]
}

/// Inputs of the activation checks: values on both sides of 0 and of 6,
/// exactly at them and far above, as a `[rows, 8]` matrix.
pub fn activation_input() -> Vec<f32> {
    let mut x: Vec<f32> = values(600, 5).iter().map(|v| v * 9.0).collect();
    x.extend([0.0, 6.0, -0.0, 5.999_999, 6.000_001, 12.0, 30.0, -6.0]);
    x
}

/// ReLU6 (`six`) or ReLU of [`activation_input`] on `device` (made
/// differentiable), and the gradient of Σ act(x) ⊙ g with g = `values(n, 6)`.
/// `transposed` feeds the matrix's transpose, a strided view, in and
/// transposes back: the gradient is the same function of x.
pub fn activation_results(device: &Device, six: bool, transposed: bool) -> (Vec<f32>, Vec<f32>) {
    let x = activation_input();
    let n = x.len();
    let device = device.clone().autodiff();
    let input = Tensor::<2>::from_data(TensorData::new(x, [n / 8, 8]), &device).require_grad();
    let act = |t: Tensor<2>| {
        if six { relu6(t) } else { relu(t) }
    };
    let y = if transposed {
        act(input.clone().transpose()).transpose()
    } else {
        act(input.clone())
    };
    let out = y.clone().into_data().try_to_vec::<f32>().unwrap();
    let weights = Tensor::<2>::from_data(TensorData::new(values(n, 6), [n / 8, 8]), &device);
    let grads = (y * weights).sum().backward();
    (out, flat(input.grad(&grads), "activation"))
}

/// ReLU6 of a training batch norm on `device` (made differentiable), for a
/// `[4, 5, 6, 7]` input of [`batch_norm_input`] with γ of 3 and β of 2 near
/// the mean, so that outputs fall below 0, inside (0, 6) and above 6:
/// `fused` through `histoshard::train::ops::batch_norm_relu6`, else as
/// `relu6(bn.forward(x))`. Returns the output, the running mean and
/// variance after the step, and the gradients of Σ y ⊙ g with respect to x,
/// γ and β.
pub fn batch_norm_relu6_results(device: &Device, fused: bool) -> [Vec<f32>; 6] {
    use burn::nn::BatchNormConfig;
    use histoshard::train::ops::batch_norm_relu6::batch_norm_relu6;
    let shape = [4, 5, 6, 7];
    let device = device.clone().autodiff();
    let mut bn = BatchNormConfig::new(shape[1])
        .with_epsilon(1e-3)
        .init(&device);
    bn.gamma = bn.gamma.map(|g| g.mul_scalar(3.0).detach().require_grad());
    bn.beta = bn.beta.map(|b| b.add_scalar(2.0).detach().require_grad());
    let n: usize = shape.iter().product();
    let x = Tensor::<4>::from_data(TensorData::new(batch_norm_input(&shape), shape), &device)
        .require_grad();
    let y = if fused {
        batch_norm_relu6(&bn, x.clone())
    } else {
        relu6(bn.forward(x.clone()))
    };
    let g = Tensor::<4>::from_data(TensorData::new(batch_norm_output_grad(n), shape), &device);
    let output = flat(Some(y.clone()), "batch norm + relu6");
    let grads = (y * g).sum().backward();
    let running = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
    [
        output,
        running(bn.running_mean.value()),
        running(bn.running_var.value()),
        flat(x.grad(&grads), "batch norm + relu6 x"),
        flat(bn.gamma.grad(&grads), "batch norm + relu6 gamma"),
        flat(bn.beta.grad(&grads), "batch norm + relu6 beta"),
    ]
}

/// What [`batch_norm_relu6_results`] returns, in order.
pub const BATCH_NORM_RELU6_RESULTS: [&str; 6] = [
    "output",
    "running mean",
    "running variance",
    "input gradient",
    "gamma gradient",
    "beta gradient",
];
