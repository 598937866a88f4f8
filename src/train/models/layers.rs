//! Building blocks shared by the backbones: a bias-free convolution followed
//! by batch norm (MobileNetV2, Inception-v3), a way to freeze every batch
//! norm of a sub-network, and batch norm folded into the convolution before
//! it, for inference. (ReLU6, which MobileNetV2 and EfficientNet-Lite use, is
//! a backend operation: `crate::train::ops::relu6`.)

use burn::{
    module::{Flag, Module, ModuleMapper, Param},
    nn::{
        BatchNorm, BatchNormConfig, PaddingConfig2d,
        conv::{Conv2d, Conv2dConfig},
    },
    tensor::{Device, Tensor},
};

use crate::train::ops::batch_norm_relu6::batch_norm_relu6;

/// `conv` then `bn` normalising with its running statistics (inference), as
/// one convolution with a bias: per output channel, with s = γ / √(var + ε),
/// the weights times s and the bias (b − mean)·s + β (b = 0 without one).
/// The same function up to float rounding, one pass over the activations
/// fewer. Computed on the tensors' own device, which should be the inner
/// (non-autodiff) one: the result is for inference only.
pub fn fold_batch_norm(conv: &Conv2d, bn: &BatchNorm) -> Conv2d {
    let weight = conv.weight.val();
    let [out, ..] = weight.dims();
    let scale = bn
        .gamma
        .val()
        .div(bn.running_var.value().add_scalar(bn.epsilon).sqrt());
    let bias = match &conv.bias {
        Some(b) => b.val() - bn.running_mean.value(),
        None => bn.running_mean.value().neg(),
    };
    let bias = bias * scale.clone() + bn.beta.val();
    Conv2d {
        weight: Param::from_tensor(weight * scale.reshape([out, 1, 1, 1])),
        bias: Some(Param::from_tensor(bias)),
        stride: conv.stride,
        kernel_size: conv.kernel_size,
        dilation: conv.dilation,
        groups: conv.groups,
        padding: conv.padding.clone(),
    }
}

/// A convolution without bias, then batch norm; the activation is the
/// caller's (ReLU6 in MobileNetV2, ReLU in Inception). The field names are
/// torchvision's `BasicConv2d` ones, so Inception's weights load by name.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl ConvBn {
    /// Convolution then batch norm, no activation.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }

    /// Convolution, batch norm, then ReLU6 (the norm and the ReLU6 one step
    /// when the norm trains: `crate::train::ops::batch_norm_relu6`).
    pub fn forward_relu6(&self, x: Tensor<4>) -> Tensor<4> {
        batch_norm_relu6(&self.bn, self.conv.forward(x))
    }
}

/// The shape of a [`ConvBn`]. Defaults: stride 1, no padding, one group,
/// PyTorch's batch-norm epsilon 1e-5.
#[derive(Clone, Copy, Debug)]
pub struct ConvBnConfig {
    channels: [usize; 2],
    kernel: [usize; 2],
    stride: usize,
    /// Rows, columns (symmetric).
    padding: [usize; 2],
    groups: usize,
    epsilon: f64,
}

impl ConvBnConfig {
    pub fn new(input: usize, output: usize, kernel: [usize; 2]) -> Self {
        Self {
            channels: [input, output],
            kernel,
            stride: 1,
            padding: [0, 0],
            groups: 1,
            epsilon: 1e-5,
        }
    }

    pub fn with_stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    pub fn with_padding(self, padding: [usize; 2]) -> Self {
        Self { padding, ..self }
    }

    /// `(k − 1) / 2` on both sides: the output keeps the input's size (at stride 1).
    pub fn with_same_padding(self) -> Self {
        let [kh, kw] = self.kernel;
        self.with_padding([(kh - 1) / 2, (kw - 1) / 2])
    }

    pub fn with_groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    pub fn with_epsilon(self, epsilon: f64) -> Self {
        Self { epsilon, ..self }
    }

    pub fn init(&self, device: &Device) -> ConvBn {
        let [ph, pw] = self.padding;
        ConvBn {
            conv: Conv2dConfig::new(self.channels, self.kernel)
                .with_stride([self.stride, self.stride])
                .with_groups(self.groups)
                .with_padding(PaddingConfig2d::Explicit(ph, pw, ph, pw))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(self.channels[1])
                .with_epsilon(self.epsilon)
                .init(device),
        }
    }
}

/// Freezes every [`BatchNorm`] inside `module` (its scale and shift stop
/// training and it normalises with its running statistics, which then stay
/// as they are) and leaves everything else as it was: the `--bn-stats
/// frozen` policy for the trainable tail of a backbone, without listing each
/// norm of blocks that have a dozen.
pub fn freeze_norms<M: Module>(module: M) -> M {
    /// Tracks the type of the struct whose fields are being mapped: a
    /// parameter directly inside a `BatchNorm` is one of its own.
    #[derive(Default)]
    struct FreezeNorms {
        containers: Vec<String>,
    }
    impl FreezeNorms {
        fn in_norm(&self) -> bool {
            self.containers
                .last()
                .is_some_and(|c| c == "Struct:BatchNorm")
        }
    }
    impl ModuleMapper for FreezeNorms {
        fn enter_module(&mut self, _name: &str, container_type: &str) {
            self.containers.push(container_type.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.containers.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if self.in_norm() {
                param.set_require_grad(false)
            } else {
                param
            }
        }
        fn map_flag(&mut self, flag: Param<Flag>) -> Param<Flag> {
            if self.in_norm() {
                flag.with_value(false)
            } else {
                flag
            }
        }
    }
    module.map(&mut FreezeNorms::default())
}

/// One part of a backbone for `freeze_backbone`: frozen when it does not
/// train; when it does, with `freeze_bn` its batch norms keep their ImageNet
/// statistics (`--bn-stats frozen`), else it trains whole.
pub fn set_trainable<M: Module>(module: M, trains: bool, freeze_bn: bool) -> M {
    match (trains, freeze_bn) {
        (false, _) => module.freeze(),
        (true, true) => freeze_norms(module),
        (true, false) => module,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::module::ModuleVisitor;

    /// Parameters that require gradients.
    pub(crate) fn trainable<M: Module>(m: &M) -> usize {
        struct Trainable(usize);
        impl ModuleVisitor for Trainable {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let t = param.val();
                if t.is_require_grad() {
                    self.0 += t.shape().num_elements();
                }
            }
        }
        let mut v = Trainable(0);
        m.visit(&mut v);
        v.0
    }

    #[test]
    fn freeze_norms_freezes_only_batch_norms() {
        let d = Device::default().autodiff();
        let block = ConvBnConfig::new(4, 8, [3, 3]).init(&d);
        assert_eq!(trainable(&block), 4 * 8 * 9 + 8 * 2);
        let block = freeze_norms(block);
        assert_eq!(trainable(&block), 4 * 8 * 9);
        assert!(!block.bn.training.is_enabled());
        // A frozen norm normalises with its running statistics, even on an
        // autodiff device: zeros stay zeros (mean 0, variance 1, γ 1, β 0).
        let y = block.forward(Tensor::zeros([2, 4, 5, 5], &d));
        let largest: f32 = y.abs().max().into_scalar();
        assert_eq!(largest, 0.0);
    }

    #[test]
    fn same_padding_keeps_the_size_for_odd_and_rectangular_kernels() {
        let d = Device::default();
        let x = Tensor::<4>::zeros([1, 2, 9, 11], &d);
        for kernel in [[1, 1], [3, 3], [1, 7], [7, 1]] {
            let c = ConvBnConfig::new(2, 3, kernel).with_same_padding().init(&d);
            assert_eq!(c.forward(x.clone()).dims(), [1, 3, 9, 11], "{kernel:?}");
        }
    }
}
