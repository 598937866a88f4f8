//! ReLU6, min(max(x, 0), 6), as one backend operation forward and one
//! backward, through burn 0.22's backend extensions (`#[backend_extension]`).
//!
//! burn has no ReLU6 of its own: its `relu6` is a clamp, which burn-autodiff
//! records as two clamps whose backward passes are built from comparisons and
//! masked fills, and histoshard's earlier form, relu(x) − relu(x − 6), took
//! four passes over the activations forward and four back (15% of flex's
//! EfficientNet-Lite0 training step, docs/BENCHMARKS.md). Here each direction
//! is one pass:
//!
//! - flex: the loops below, over rayon's threads, written straight into the
//!   buffer of the result;
//! - LibTorch: its clamp forward and PyTorch's own `hardtanh_backward`, the
//!   kernel PyTorch's `ReLU6` trains with.
//!
//! The gradient is 0 where x ≤ 0 or x ≥ 6, as in PyTorch. The `Autodiff`
//! implementation records the operation with its input as the backward state,
//! as burn-autodiff does for its own ReLU.
// burn 0.22 deprecates burn-tch, histoshard's LibTorch path, which the
// generated routing and the LibTorch implementation name.
#![allow(deprecated)]

use core::marker::PhantomData;

use burn::backend::{
    Backend, TensorMetadata,
    autodiff::{
        Autodiff, NodeId,
        checkpoint::{
            base::Checkpointer, retro_forward::RetroForward, state::BackwardStates,
            strategy::CheckpointStrategy,
        },
        grads::Gradients,
        ops::{Backward, Ops, OpsKind, unary},
    },
    backend_extension, get_device_settings,
    tensor::FloatTensor,
};
use burn::tensor::Tensor;

/// The upper bound of ReLU6.
const SIX: f64 = 6.0;

/// ReLU6 as a backend operation: the forward and the gradient with respect to
/// its input, given the input.
#[backend_extension(Flex: cfg(feature = "flex"), LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait Relu6Ops: Backend {
    /// min(max(x, 0), 6).
    fn relu6(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// 0 where x ≤ 0 or x ≥ 6, else `grad` (PyTorch's rule, a NaN passes).
    fn relu6_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// ReLU6 on any histoshard device, differentiable on an autodiff one.
pub fn relu6<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    use burn::backend::Dispatch;
    Tensor::from_dispatch(<Dispatch as Relu6Ops>::relu6(x.into_dispatch()))
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::{
        Bytes, DType, Element, Flex, TensorMetadata,
        flex::{FlexTensor, Layout},
    };
    use rayon::prelude::*;

    use super::{Relu6Ops, pass_inside_composed};

    /// Elements per rayon task: large enough that a task outlasts its
    /// scheduling, small enough that both cores share a layer's activations.
    const CHUNK: usize = 1 << 15;

    impl Relu6Ops for Flex {
        fn relu6(x: FlexTensor) -> FlexTensor {
            match x.dtype() {
                DType::F32 => map(&x, |v: f32| clamp(v, 0.0, 6.0)),
                DType::F64 => map(&x, |v: f64| clamp(v, 0.0, 6.0)),
                _ => {
                    use burn::backend::ops::FloatTensorOps;
                    Flex::float_clamp(x, 0.0.into(), super::SIX.into())
                }
            }
        }

        fn relu6_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
            match (x.dtype(), grad.dtype()) {
                (DType::F32, DType::F32) => zip(&x, &grad, |v: f32, g| pass(v, g, 0.0, 6.0)),
                (DType::F64, DType::F64) => zip(&x, &grad, |v: f64, g| pass(v, g, 0.0, 6.0)),
                // Half precision: the same rule from flex's own operations.
                _ => pass_inside_composed::<Flex>(x, grad),
            }
        }
    }

    /// min(max(v, 0), six), NaN kept. Selects, no branches: vectorises.
    fn clamp<E: PartialOrd + Copy>(v: E, zero: E, six: E) -> E {
        let low = if v < zero { zero } else { v };
        if low > six { six } else { low }
    }

    /// 0 where v ≤ 0 or v ≥ six, else `g` (a NaN passes, as in PyTorch's
    /// `hardtanh_backward`). `|`, not `||`, and a select: a short-circuit
    /// form compiled to branches that mispredicted on half the elements (15%
    /// of a training step).
    fn pass<E: PartialOrd + Copy>(v: E, g: E, zero: E, six: E) -> E {
        if (v <= zero) | (v >= six) { zero } else { g }
    }

    /// `f` of every element, in parallel chunks, into a new buffer that
    /// flex takes as it is: `FlexTensor::empty` would zero its buffer and
    /// then copy it to align it.
    fn map<E, F>(x: &FlexTensor, f: F) -> FlexTensor
    where
        E: Element + bytemuck::Pod,
        F: Fn(E) -> E + Sync,
    {
        // A cheap clone when `x` is its whole buffer in order, else a copy.
        let x = x.to_contiguous();
        let out: Vec<E> = x
            .storage::<E>()
            .par_iter()
            .with_min_len(CHUNK)
            .map(|&v| f(v))
            .collect();
        tensor(out, x.shape(), x.dtype())
    }

    /// `f` of every pair of elements of two tensors of one shape, as [`map`].
    fn zip<E, F>(x: &FlexTensor, y: &FlexTensor, f: F) -> FlexTensor
    where
        E: Element + bytemuck::Pod,
        F: Fn(E, E) -> E + Sync,
    {
        let (x, y) = (x.to_contiguous(), y.to_contiguous());
        let out: Vec<E> = x
            .storage::<E>()
            .par_iter()
            .zip(y.storage::<E>())
            .with_min_len(CHUNK)
            .map(|(&a, &b)| f(a, b))
            .collect();
        tensor(out, y.shape(), y.dtype())
    }

    fn tensor<E: bytemuck::Pod + Send + Sync>(
        values: Vec<E>,
        shape: burn::backend::Shape,
        dtype: DType,
    ) -> FlexTensor {
        FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(shape), dtype)
    }
}

#[cfg(feature = "tch")]
mod libtorch {
    use burn::backend::{LibTorch, libtorch::TchTensor, ops::FloatTensorOps};

    use super::{Relu6Ops, SIX};

    impl Relu6Ops for LibTorch {
        fn relu6(x: TchTensor) -> TchTensor {
            LibTorch::float_clamp(x, 0.0.into(), SIX.into())
        }

        fn relu6_backward(x: TchTensor, grad: TchTensor) -> TchTensor {
            TchTensor::new(x.tensor.hardtanh_backward(&grad.tensor, 0.0, SIX))
        }
    }
}

/// Recomputes the output from the input when a checkpointing strategy
/// dropped it.
#[derive(Debug, Clone)]
struct RetroRelu6<B> {
    input: NodeId,
    _backend: PhantomData<B>,
}

impl<B: Relu6Ops> RetroForward for RetroRelu6<B> {
    fn forward(&self, states: &mut BackwardStates, out_node: NodeId) {
        let input = states.get_state::<FloatTensor<B>>(&self.input);
        states.save(out_node, B::relu6(input))
    }
}

/// The recorded step: its state is the input's node.
#[derive(Debug)]
struct Relu6Step;

impl<B: Relu6Ops> Backward<B, 1> for Relu6Step {
    type State = NodeId;

    fn backward(self, ops: Ops<NodeId, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let input = checkpointer.retrieve_node_output(ops.state);
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::relu6_backward(input, grad)
        });
    }
}

impl<B: Relu6Ops, C: CheckpointStrategy> Relu6Ops for Autodiff<B, C> {
    fn relu6(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let retro = RetroRelu6::<B> {
            input: x.id(),
            _backend: PhantomData,
        };
        match Relu6Step
            .prepare::<C>([x.node()])
            .memory_bound()
            .retro_forward(retro)
            .parents([&x])
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&x);
                prep.finish(state, B::relu6(x.into_primitive()))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::relu6(x.into_primitive())),
        }
    }

    fn relu6_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // Differentiable in `grad` (a gradient of a gradient), from
        // autodiff's own operations.
        pass_inside_composed::<Self>(x, grad)
    }
}

/// 0 where x ≤ 0 or x ≥ 6, else `grad`, from the backend's comparisons and
/// masked fill: where no dedicated kernel exists.
fn pass_inside_composed<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let bools = get_device_settings::<B>(&x.device()).bool_dtype;
    let at_most_zero = B::float_lower_equal_elem(x.clone(), 0.0.into(), bools);
    let at_least_six = B::float_greater_equal_elem(x, SIX.into(), bools);
    B::float_mask_fill(grad, B::bool_or(at_most_zero, at_least_six), 0.0.into())
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Flex, TensorData, flex::FlexTensor};

    use super::{Relu6Ops, pass_inside_composed};

    /// The fallback (half precision on flex, a gradient of a gradient) and
    /// flex's own kernel agree, edges included.
    #[test]
    fn composed_backward_matches_the_kernel() {
        let x = [
            -1.0f32,
            -0.0,
            0.0,
            1e-7,
            3.0,
            5.999_999,
            6.0,
            6.000_001,
            40.0,
            f32::NAN,
        ];
        let g: Vec<f32> = (1..=x.len()).map(|k| k as f32).collect();
        let tensor = |v: &[f32]| FlexTensor::from_data(TensorData::new(v.to_vec(), [v.len()]));
        let kernel = <Flex as Relu6Ops>::relu6_backward(tensor(&x), tensor(&g));
        let composed = pass_inside_composed::<Flex>(tensor(&x), tensor(&g));
        let values = |t: FlexTensor| t.into_data().to_vec::<f32>().unwrap();
        let want = [0.0, 0.0, 0.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 10.0];
        assert_eq!(values(kernel), want);
        assert_eq!(values(composed), want);
    }
}
