//! ReLU6 of a training batch norm, ReLU6(BN(x)), as one backend operation
//! forward and one backward (`#[backend_extension]`).
//!
//! EfficientNet-Lite and MobileNetV2 follow most batch norms with a ReLU6.
//! Recorded as two steps, the forward writes the norm's output and then
//! reads it again to clamp it, and the backward writes the masked gradient
//! and then reads it again for the norm's sums: two passes over the
//! activations and two fork-joins of rayon's threads per layer, in the
//! fine-tuning epochs and in the batch-norm adaptation. Here:
//!
//! - flex: vendor/burn-flex's batch norm with the clamp and the mask inside
//!   its passes over each channel (`batch_norm_train_clamped`, burn-flex
//!   change 9): the same values bit for bit as the two steps;
//! - LibTorch: the two steps, PyTorch's kernels (batch norm, clamp,
//!   `hardtanh_backward`).
//!
//! The backward masks the gradient by the clamped output, which lies
//! strictly inside (0, 6) exactly where the norm's output does. Only the
//! training path is fused ([`batch_norm_relu6`]); inference keeps
//! `relu6(bn.forward(x))`, whose norm is folded into the convolution.
// burn 0.22 deprecates burn-tch, histoshard's LibTorch path, which the
// generated routing and the LibTorch implementation name.
#![allow(deprecated)]

use burn::backend::{
    AutodiffBackend, Backend,
    autodiff::{
        Autodiff, NodeId,
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients,
        ops::{Backward, Ops, OpsKind},
    },
    backend_extension,
    tensor::FloatTensor,
};
use burn::nn::BatchNorm;
use burn::tensor::Tensor;

use super::relu6::relu6;

/// The upper bound of ReLU6.
const SIX: f64 = 6.0;

/// ReLU6(batch norm with the batch's statistics) as a backend operation.
#[backend_extension(Flex: cfg(feature = "flex"), LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait BatchNormRelu6Ops: Backend {
    /// min(max(BN(x), 0), 6) with the batch's mean and biased variance:
    /// (output, mean, variance). Each tuple is written out: the macro reads
    /// the signature as it is spelled.
    fn batch_norm_relu6_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// The gradients of [`Self::batch_norm_relu6_train`] with respect to
    /// (x, γ, β), given its clamped `output` and statistics.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_relu6_train_backward(
        x: FloatTensor<Self>,
        output: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// `relu6(bn.forward(x))`, as one step when `bn` trains (on an autodiff
/// device, its training flag on), with its running statistics updated as
/// burn's `BatchNorm::forward` updates them.
pub fn batch_norm_relu6(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    use burn::backend::Dispatch;
    if !(x.device().is_autodiff() && bn.training.is_enabled()) {
        return relu6(bn.forward(x));
    }
    let (output, mean, variance) = <Dispatch as BatchNormRelu6Ops>::batch_norm_relu6_train(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
    );
    let output = Tensor::<4>::from_dispatch(output);
    let [mean, variance] = [mean, variance].map(Tensor::<1>::from_dispatch);
    // burn-nn 0.22's `BatchNorm::forward_train`, term for term.
    let device = output.device();
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    let running_mean = running_mean
        .mul_scalar(1.0 - bn.momentum)
        .add(mean.detach().mul_scalar(bn.momentum));
    let running_var = running_var
        .mul_scalar(1.0 - bn.momentum)
        .add(variance.detach().mul_scalar(bn.momentum));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    output
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::{Flex, flex::FlexTensor};

    use super::{BatchNormRelu6Ops, SIX};

    impl BatchNormRelu6Ops for Flex {
        fn batch_norm_relu6_train(
            x: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            epsilon: f64,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let r = burn_flex::ops::batch_norm_train_clamped(x, gamma, beta, epsilon, 0.0, SIX);
            (r.output, r.mean, r.variance)
        }

        fn batch_norm_relu6_train_backward(
            x: FlexTensor,
            output: FlexTensor,
            gamma: FlexTensor,
            mean: FlexTensor,
            variance: FlexTensor,
            epsilon: f64,
            output_grad: FlexTensor,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let r = burn_flex::ops::batch_norm_train_clamped_backward(
                x,
                output,
                gamma,
                mean,
                variance,
                epsilon,
                0.0,
                SIX,
                output_grad,
            );
            (r.x_grad, r.gamma_grad, r.beta_grad)
        }
    }
}

#[cfg(feature = "tch")]
mod libtorch {
    use burn::backend::{LibTorch, libtorch::TchTensor, ops::ModuleOps};

    use super::super::relu6::Relu6Ops;
    use super::BatchNormRelu6Ops;

    impl BatchNormRelu6Ops for LibTorch {
        fn batch_norm_relu6_train(
            x: TchTensor,
            gamma: TchTensor,
            beta: TchTensor,
            epsilon: f64,
        ) -> (TchTensor, TchTensor, TchTensor) {
            let r = LibTorch::batch_norm_train(x, gamma, beta, epsilon);
            (LibTorch::relu6(r.output), r.mean, r.variance)
        }

        fn batch_norm_relu6_train_backward(
            x: TchTensor,
            output: TchTensor,
            gamma: TchTensor,
            mean: TchTensor,
            variance: TchTensor,
            epsilon: f64,
            output_grad: TchTensor,
        ) -> (TchTensor, TchTensor, TchTensor) {
            let grad = LibTorch::relu6_backward(output, output_grad);
            let r = LibTorch::batch_norm_train_backward(x, gamma, mean, variance, epsilon, grad);
            (r.x_grad, r.gamma_grad, r.beta_grad)
        }
    }
}

/// The recorded step: the input's and γ's nodes, the clamped output and the
/// batch's statistics as the forward computed them, ε.
#[derive(Debug)]
struct BatchNormRelu6Step;

type StepState<B> = (
    NodeId,
    NodeId,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    f64,
);

impl<B: BatchNormRelu6Ops> Backward<B, 3> for BatchNormRelu6Step {
    type State = StepState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, gamma_state, output, mean, variance, epsilon) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let gamma = checkpointer.retrieve_node_output::<FloatTensor<B>>(gamma_state);
        let (x_grad, gamma_grad, beta_grad) =
            B::batch_norm_relu6_train_backward(x, output, gamma, mean, variance, epsilon, grad);
        for (node, grad) in [
            (node_x, x_grad),
            (node_gamma, gamma_grad),
            (node_beta, beta_grad),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: BatchNormRelu6Ops, C: CheckpointStrategy> BatchNormRelu6Ops for Autodiff<B, C> {
    fn batch_norm_relu6_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match BatchNormRelu6Step
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = prep.checkpoint(&gamma);
                let (output, mean, variance) = B::batch_norm_relu6_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                let state = (
                    x_state,
                    gamma_state,
                    output.clone(),
                    mean.clone(),
                    variance.clone(),
                    epsilon,
                );
                (
                    prep.finish(state, output),
                    Self::from_inner(mean),
                    Self::from_inner(variance),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (output, mean, variance) = B::batch_norm_relu6_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                (
                    prep.finish(output),
                    Self::from_inner(mean),
                    Self::from_inner(variance),
                )
            }
        }
    }

    fn batch_norm_relu6_train_backward(
        _x: FloatTensor<Self>,
        _output: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _mean: FloatTensor<Self>,
        _variance: FloatTensor<Self>,
        _epsilon: f64,
        _output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // As burn-autodiff's own batch norm: no gradient of a gradient.
        panic!("batch_norm_relu6_train_backward cannot be differentiated")
    }
}
