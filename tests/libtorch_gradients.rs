//! Gradients on LibTorch against flex, for what histoshard's copy of burn-tch
//! (vendor/burn-tch) computes with PyTorch's own kernels instead of burn's
//! defaults: the convolution weight gradient (checked with the input and bias
//! gradients beside it, on the convolutions the models use: plain, strided,
//! dilated, grouped, depthwise, and with asymmetric "same" padding; the
//! depthwise weight gradient that it computes itself on the CPU, with batches,
//! strides, dilations and kernels other than 3×3), the
//! ReLU backward and histoshard's ReLU6 operation (`src/train/ops/`), and the constant
//! tensors and padding that the asymmetric convolutions are built on
//! (`full`/`zeros`/`ones` in each float dtype, `pad` in each mode), and batch
//! norm (inference; training output, statistics and gradients). flex's own
//! kernels for some of these (vendor/burn-flex) are checked against the
//! definitions in `flex_kernels.rs`; the inputs are `common/kernels.rs`'.

#![cfg(all(feature = "tch", feature = "flex"))]

#[path = "common/kernels.rs"]
mod kernels;

use burn::tensor::{DType, Device, Tensor, TensorData, ops::PadMode};
use histoshard::train::learner::DeviceChoice;
use kernels::{
    BATCH_NORM_RELU6_RESULTS, BATCH_NORM_RESULTS, CONV_RESULTS, activation_input,
    activation_results, batch_norm_relu6_results, batch_norm_results, conv_cases, flat, gradients,
    values,
};

#[test]
fn libtorch_convolution_gradients_match_flex() {
    let cases = conv_cases();
    let flex = DeviceChoice::Flex.device().expect("flex device");
    for case in &cases {
        let want = gradients(&flex, case);
        for (device, choice, tolerance) in libtorch_devices() {
            let got = gradients(&choice.device().expect("LibTorch device"), case);
            for (what, (w, g)) in CONV_RESULTS.iter().zip(want.iter().zip(&got)) {
                assert_close(
                    w,
                    g,
                    tolerance,
                    &format!("{} on {device}: {what}", case.name),
                );
            }
        }
    }
}

#[test]
fn libtorch_relu_gradients_match_flex() {
    // flex against the definitions: flex_kernels.rs.
    let flex = DeviceChoice::Flex.device().expect("flex device");
    let x = activation_input();
    for six in [false, true] {
        let name = if six { "relu6" } else { "relu" };
        let (want_y, want_g) = activation_results(&flex, six, false);
        for (device, choice, _) in libtorch_devices() {
            let (y, grad) =
                activation_results(&choice.device().expect("LibTorch device"), six, false);
            for (what, got, want) in [("value", &y, &want_y), ("gradient", &grad, &want_g)] {
                if let Some(i) = (0..x.len()).find(|&i| got[i] != want[i]) {
                    panic!(
                        "{name} on {device}: {what} at x = {} is {} (flex: {})",
                        x[i], got[i], want[i]
                    );
                }
            }
        }
    }
}

/// histoshard's ReLU6 of a training batch norm on LibTorch: PyTorch's batch
/// norm, clamp and `hardtanh_backward` (masked by the clamped output) give
/// the bits of the two separate steps, and flex's values.
#[test]
fn libtorch_batch_norm_relu6_matches_its_parts_and_flex() {
    let want = batch_norm_relu6_results(&DeviceChoice::Flex.device().expect("flex device"), true);
    for (device, choice, tolerance) in libtorch_devices() {
        let libtorch = choice.device().expect("LibTorch device");
        let fused = batch_norm_relu6_results(&libtorch, true);
        let apart = batch_norm_relu6_results(&libtorch, false);
        for (i, what) in BATCH_NORM_RELU6_RESULTS.iter().enumerate() {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fused[i]), bits(&apart[i]), "{what} on {device}");
            assert_close(
                &want[i],
                &fused[i],
                tolerance,
                &format!("{what} on {device}"),
            );
        }
    }
}

/// LibTorch on the CPU, and on the GPU where there is one, with the tolerance
/// of a convolution: cuDNN computes them in TF32 by default (PyTorch's default
/// too), ~1e-3 relative.
fn libtorch_devices() -> Vec<(&'static str, DeviceChoice, f32)> {
    let mut out = vec![("cpu", DeviceChoice::Cpu, 1e-5)];
    match DeviceChoice::Auto.resolve() {
        DeviceChoice::Cuda(n) => out.push(("cuda", DeviceChoice::Cuda(n), 1e-2)),
        _ => eprintln!("no CUDA device: LibTorch checked on the CPU only"),
    }
    out
}

fn assert_close(want: &[f32], got: &[f32], tolerance: f32, what: &str) {
    assert_eq!(want.len(), got.len(), "{what} gradient size");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let diff = want
        .iter()
        .zip(got)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= tolerance * scale,
        "{what} gradient differs by {diff} (largest value {scale})"
    );
}

/// `full`, `zeros` and `ones` in each float dtype, on the plain and the
/// autodiff device: the same dtype and the same bits as flex. The values
/// include ones that each dtype rounds, and one that overflows f16.
#[test]
fn libtorch_constant_tensors_match_flex() {
    let flex = DeviceChoice::Flex.device().expect("flex device");
    let shape = [2, 3, 4];
    let make = |device: &Device, dtype: DType, what: &str| -> Tensor<3> {
        match what {
            "zeros" => Tensor::zeros(shape, (device, dtype)),
            "ones" => Tensor::ones(shape, (device, dtype)),
            _ => Tensor::full(shape, what.parse::<f64>().unwrap(), (device, dtype)),
        }
    };
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        for what in ["zeros", "ones", "0", "-3.25", "0.1", "1e5", "-inf"] {
            let want = make(&flex, dtype, what);
            assert_eq!(want.dtype(), dtype, "{what} {dtype:?} on flex");
            let want = want.into_data();
            for (device, choice, _) in libtorch_devices() {
                let plain = choice.device().expect("LibTorch device");
                for (autodiff, device_used) in [(false, plain.clone()), (true, plain.autodiff())] {
                    let got = make(&device_used, dtype, what);
                    let name = format!("{what} as {dtype:?} on {device} (autodiff: {autodiff})");
                    assert_eq!(got.dtype(), dtype, "{name}: dtype");
                    assert_eq!(got.dims(), shape, "{name}: shape");
                    assert_eq!(
                        got.into_data().as_bytes(),
                        want.as_bytes(),
                        "{name}: values"
                    );
                }
            }
        }
    }
}

/// `pad` in each mode, on asymmetric paddings of the last two dimensions (as
/// a "same" convolution pads) and of others: values bit for bit as flex's on
/// the plain device (LibTorch's own `float_pad`), and values and gradients
/// through it on the autodiff device (burn's `pad` over LibTorch's `full`).
#[test]
fn libtorch_pad_matches_flex() {
    let shape = [2, 3, 5, 6];
    let paddings: [[(usize, usize); 4]; 5] = [
        [(0, 0), (0, 0), (0, 1), (0, 1)],
        [(0, 0), (0, 0), (1, 2), (2, 1)],
        [(0, 0), (0, 0), (4, 0), (0, 5)],
        [(1, 0), (0, 2), (1, 1), (0, 0)],
        [(0, 0), (0, 0), (0, 0), (0, 0)],
    ];
    let modes = [
        PadMode::Constant(0.0),
        PadMode::Constant(-1.5),
        PadMode::Reflect,
        PadMode::Edge,
    ];
    let n = shape.iter().product();
    let x = values(n, 7);
    let run = |device: &Device, padding: [(usize, usize); 4], mode: PadMode, grad: bool| {
        let device = if grad {
            device.clone().autodiff()
        } else {
            device.clone()
        };
        let input = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &device);
        let input = if grad { input.require_grad() } else { input };
        let y = input.clone().pad(padding, mode);
        let dims = y.dims();
        let out = y.clone().into_data().try_to_vec::<f32>().unwrap();
        let g = if grad {
            let weights =
                Tensor::<4>::from_data(TensorData::new(values(out.len(), 8), dims), &device);
            flat(input.grad(&(y * weights).sum().backward()), "pad")
        } else {
            Vec::new()
        };
        (dims, out, g)
    };
    let flex = DeviceChoice::Flex.device().expect("flex device");
    for padding in paddings {
        for mode in modes {
            for grad in [false, true] {
                let name = format!("pad {padding:?} {mode:?} (autodiff: {grad})");
                let (want_dims, want_y, want_g) = run(&flex, padding, mode, grad);
                let expected: Vec<usize> = (0..4)
                    .map(|d| shape[d] + padding[d].0 + padding[d].1)
                    .collect();
                assert_eq!(want_dims.to_vec(), expected, "{name} on flex: shape");
                for (device, choice, _) in libtorch_devices() {
                    let (dims, y, g) = run(
                        &choice.device().expect("LibTorch device"),
                        padding,
                        mode,
                        grad,
                    );
                    assert_eq!(dims, want_dims, "{name} on {device}: shape");
                    assert_eq!(y, want_y, "{name} on {device}: values");
                    assert_close(&want_g, &g, 1e-6, &format!("{name} on {device}"));
                }
            }
        }
    }
}

/// `pad` keeps a tensor's float dtype, with the constant rounded as flex
/// rounds it (1e5 overflows f16: both give +inf).
#[test]
fn libtorch_pad_keeps_dtype() {
    let flex = DeviceChoice::Flex.device().expect("flex device");
    let run = |device: &Device, dtype: DType, value: f32| {
        let x = Tensor::<4>::from_data(TensorData::new(values(24, 9), [1, 2, 3, 4]), device)
            .cast(dtype);
        let y = x.pad([(0, 1), (2, 1)], PadMode::Constant(value));
        (y.dtype(), y.into_data())
    };
    for dtype in [DType::F64, DType::F16, DType::BF16] {
        for value in [0.0, 0.1, 1e5] {
            let (want_dtype, want) = run(&flex, dtype, value);
            assert_eq!(want_dtype, dtype, "pad {dtype:?} with {value} on flex");
            for (device, choice, _) in libtorch_devices() {
                let (got_dtype, got) =
                    run(&choice.device().expect("LibTorch device"), dtype, value);
                let name = format!("pad {dtype:?} with {value} on {device}");
                assert_eq!(got_dtype, dtype, "{name}: dtype");
                assert_eq!(got.as_bytes(), want.as_bytes(), "{name}: values");
            }
        }
    }
}

/// LibTorch's batch norm (vendor/burn-tch: `batch_norm`, `native_batch_norm`
/// for `batch_norm_train`, its own backward) against flex's (vendor/burn-flex
/// change 2, itself checked against the definitions in `flex_kernels.rs`), for inputs of rank 2, 3 and 4 and the two epsilons the models
/// use. Tolerance: 1e-5 on the CPU, 1e-4 on CUDA (another summation order), of
/// the largest value of the same channel (or 1 if larger): the constant
/// channel's input gradient is 1/√ε times the others'.
#[test]
fn libtorch_batch_norm_matches_flex() {
    let flex = DeviceChoice::Flex.device().expect("flex device");
    let what = BATCH_NORM_RESULTS;
    for epsilon in [1e-3, 1e-5] {
        for (device, choice, _) in libtorch_devices() {
            let tolerance = if device == "cpu" { 1e-5 } else { 1e-4 };
            let libtorch = choice.device().expect("LibTorch device");
            let run4 = |d: &Device| batch_norm_results(d, [4, 5, 6, 7], epsilon);
            let run3 = |d: &Device| batch_norm_results(d, [3, 4, 10], epsilon);
            let run2 = |d: &Device| batch_norm_results(d, [16, 6], epsilon);
            for (shape, want, got) in [
                (vec![4, 5, 6, 7], run4(&flex), run4(&libtorch)),
                (vec![3, 4, 10], run3(&flex), run3(&libtorch)),
                (vec![16, 6], run2(&flex), run2(&libtorch)),
            ] {
                let name = format!("{shape:?}, epsilon {epsilon} on {device}");
                // The constant channel's variance is 0, on both, and no
                // variance is negative.
                assert_eq!(want[3][1], 0.0, "{name}: flex's variance");
                assert!(got[3][1].abs() < 1e-9, "{name}: variance {}", got[3][1]);
                assert!(got[3].iter().all(|v| *v >= 0.0), "{name}: {:?}", got[3]);
                let channels = shape[1];
                let inner: usize = shape[2..].iter().product();
                for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                    // Indices 0, 1 and 4 are shaped as the input, the rest [channels].
                    let inner = if [0, 1, 4].contains(&i) { inner } else { 1 };
                    let channel = |k: usize| (k / inner) % channels;
                    let what = format!("{name}: {}", what[i]);
                    assert_eq!(w.len(), g.len(), "{what}: size");
                    let mut scale = vec![1f32; channels];
                    for (k, v) in w.iter().enumerate() {
                        scale[channel(k)] = scale[channel(k)].max(v.abs());
                    }
                    for (k, (a, b)) in w.iter().zip(g).enumerate() {
                        assert!(
                            (a - b).abs() <= tolerance * scale[channel(k)],
                            "{what}: element {k} is {b}, flex's {a}"
                        );
                    }
                }
            }
        }
    }
}
